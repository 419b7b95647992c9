//! Placement of the groups `G` > 0 (`--shards`): which members hold a group.
//!
//! Group 0 has every member (the cluster's directory: who belongs, the resources' definitions);
//! a group `G` > 0 is held only by its holders: the `--replicas` members of group 0 ranked
//! first for `G` by rendezvous hashing of their names ([`super::placement::replicas_of`]),
//! leaving out members unreachable for [`super::view::GONE_AFTER`] (when there are
//! enough others) and a member that is leaving. The others run the group's endpoint and router
//! too, but hold none of its records: their router passes the group's requests to a holder
//! ([`target`]), which passes them to the group's leader.
//!
//! Every member tends each group once a second ([`tend`]):
//!
//! - a holder that is not in the group asks to join it (`{join, Name, Id}` to a holder's or
//!   member's endpoint, passed on to the leader, which admits holders only);
//! - the leader ([`reconcile`]) lets the holders vote once each has caught up with the log,
//!   then removes the members that are no longer holders (a member that joined, or came back,
//!   took their place), so a group keeps its replicas while it moves;
//! - a member that is no longer a holder and that the leader no longer counts (`{is_member,
//!   Id}`) drops its copy: [`super::Cluster::reset`] starts a new, empty instance of the group
//!   with a new id, ready to hold it again.
//!
//! So adding a member moves only the groups it wins, each with its records, and a member
//! holds only its share of the records. The member that forms the cluster (initializes group
//! 0) forms every group, holding each until its holders have joined ([`form`]).

use super::Cluster;
use super::answer::Answer;
use super::types::NodeId;
use super::view::{self, members, voters};
use crate::node::Mailbox;
use crate::term::{Atom, Value};
use erl_dist::node::NodeName;
use openraft::ChangeMembers;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

fn atom(name: &'static str) -> Value {
    Value::Atom(Atom::from_static(name))
}

/// How long a change of a group's voters or members may wait to commit.
const CHANGE_WAIT: Duration = Duration::from_secs(10);

/// How long a question to another member's endpoint waits.
const ASK_WAIT: Duration = Duration::from_secs(2);

/// Group 0 of the member of group `cluster` (itself for group 0).
fn directory(cluster: &Cluster) -> Option<Arc<Cluster>> {
    cluster
        .directory
        .as_ref()
        .and_then(std::sync::Weak::upgrade)
}

/// Whether `cluster` is a group placed on its holders (a group `G` > 0).
pub fn placed(cluster: &Cluster) -> bool {
    cluster.options.group > 0 && cluster.directory.is_some()
}

/// The names of the members that should hold the group `cluster` (`G` > 0), best ranked
/// first, as this member sees the cluster: empty while it knows no cluster.
pub fn holders(cluster: &Cluster) -> Vec<String> {
    let Some(zero) = directory(cluster) else {
        return Vec::new();
    };
    let me = cluster.node.config.name.to_string();
    let leaving = is_leaving(cluster);
    let gone = view::gone(&zero);
    let all = members(&zero);
    // A node restarted under the same name is one member (its old id goes when admitted).
    let mut names: BTreeSet<&str> = BTreeSet::new();
    let mut live: BTreeSet<&str> = BTreeSet::new();
    for (id, name) in &all {
        if leaving && *name == me {
            continue;
        }
        names.insert(name);
        if !gone.contains(id) {
            live.insert(name);
        }
    }
    let holding: BTreeSet<String> = members(cluster).into_values().collect();
    choose(
        &names,
        &live,
        &holding,
        cluster.options.replicas,
        cluster.options.group,
    )
}

/// The holders of `group` among the members `names`, of which `live` are reachable and
/// `holding` hold the group now: the first `replicas` of the live ones by rendezvous hashing;
/// when fewer are live, the unreachable ones that hold it keep it (never fewer holders for
/// some being unreachable).
pub fn choose(
    names: &BTreeSet<&str>,
    live: &BTreeSet<&str>,
    holding: &BTreeSet<String>,
    replicas: usize,
    group: u32,
) -> Vec<String> {
    let replicas = replicas.max(1);
    let live: Vec<&str> = live.iter().copied().collect();
    let mut chosen: Vec<String> = super::placement::replicas_of(group, &live, replicas)
        .into_iter()
        .map(str::to_string)
        .collect();
    let wanted = replicas.min(names.len());
    if chosen.len() < wanted {
        let keeping: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| !live.contains(n) && holding.contains(*n))
            .collect();
        chosen.extend(
            super::placement::replicas_of(group, &keeping, wanted - chosen.len())
                .into_iter()
                .map(str::to_string),
        );
    }
    chosen
}

/// Whether this member is leaving the group: it stops (SIGTERM, `drain`), leaving the cluster
/// or only this group. The endpoint answers `leaving` with it: a group's leader asks before it
/// makes the voters fewer ([`reconcile`]).
pub fn is_leaving(cluster: &Cluster) -> bool {
    cluster.leaving.load(Ordering::Acquire)
        || directory(cluster).is_some_and(|zero| zero.leaving.load(Ordering::Acquire))
}

/// Of the voters `dropped` that a change would remove while making the group's voters fewer,
/// the ones that stay voters: reachable and not leaving (asked: `leaving` to their endpoint of
/// the group, answered `false`). Fewer holders come from fewer members of group 0, and a
/// member is out of group 0 either leaving (it says so), lost (unreachable) or on its way
/// back: group 0 formed again from one member's copy ([`super::recover`]) counts the others
/// only once each has joined it again, and until then their groups keep them.
async fn staying(cluster: &Cluster, dropped: &BTreeSet<NodeId>) -> BTreeSet<NodeId> {
    let all = members(cluster);
    let mailbox = Mailbox::new(&cluster.node);
    let mut kept = BTreeSet::new();
    for id in dropped {
        let Some(name) = all.get(id) else { continue };
        if *id == cluster.id() {
            if !is_leaving(cluster) {
                kept.insert(*id);
            }
            continue;
        }
        let Ok(peer) = name.parse::<NodeName>() else {
            continue;
        };
        if cluster.node.conn(name).is_none() {
            continue;
        }
        let answer = mailbox
            .call_remote(&peer, &cluster.names.endpoint, atom("leaving"), ASK_WAIT)
            .await;
        if matches!(answer, Ok(Value::Atom(a)) if a.as_str() == "false") {
            kept.insert(*id);
        }
    }
    kept
}

/// Whether the group's voters are its holders, as this member sees them (no move under way).
pub fn settled(cluster: &Cluster) -> bool {
    let all = members(cluster);
    let voting: BTreeSet<&String> = voters(cluster)
        .iter()
        .filter_map(|id| all.get(id))
        .collect();
    let holders = holders(cluster);
    voting.len() == holders.len() && holders.iter().all(|h| voting.contains(h))
}

/// How many members should hold a group: `min(replicas, members)` (the members of group 0).
pub fn wanted(cluster: &Cluster) -> usize {
    let count = match directory(cluster) {
        Some(zero) => members(&zero)
            .into_values()
            .collect::<BTreeSet<String>>()
            .len(),
        None => members(cluster).len(),
    };
    cluster.options.replicas.min(count).max(1)
}

/// Whether this member is in the group, as far as it knows.
pub fn is_member(cluster: &Cluster) -> bool {
    members(cluster).contains_key(&cluster.id())
}

/// Forms the group `cluster` on the member that formed the cluster: once group 0 knows this
/// member, the group is initialized with it alone if the member founded group 0 and the group
/// has no members yet. Others join through [`tend`]. So does the only member of group 0 (its
/// data directory kept group 0 but not this group: killed between forming the two, or the
/// group's files lost): nobody else can hold the group, and without it the group would never
/// have a leader. (Raft refuses to initialize a group whose log is not empty.)
pub async fn form(cluster: Arc<Cluster>) {
    loop {
        if is_member(&cluster) {
            return;
        }
        if let Some(zero) = directory(&cluster)
            && view::members(&zero).contains_key(&zero.id())
        {
            let alone = view::members(&zero).len() == 1;
            if zero.founded.load(Ordering::Acquire) || alone {
                let mut only = BTreeMap::new();
                only.insert(cluster.id(), cluster.member());
                match cluster.raft().initialize(only).await {
                    Ok(()) => tracing::info!(group = cluster.options.group, "formed the group"),
                    Err(e) => tracing::debug!(error = %e, "initialize a group"),
                }
            }
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Once a second on every member: joins the group when a holder of it, lets the holders vote
/// (on the leader), drops this member's copy once the group no longer counts it.
pub async fn tend(cluster: &Arc<Cluster>, mailbox: &Mailbox) {
    if cluster.leaving.load(Ordering::Acquire) {
        return;
    }
    let holders = holders(cluster);
    if holders.is_empty() {
        return;
    }
    let me = cluster.node.config.name.to_string();
    let holding = holders.contains(&me);
    tracing::trace!(
        group = cluster.options.group,
        ?holders,
        holding,
        "tending the group"
    );
    if holding && !is_member(cluster) {
        // A copy the group does not count (this member was removed and has not dropped it
        // yet, or the group was formed again without it, [`super::recover`]) is dropped
        // first: a log of another history must not meet the group's. One still catching up
        // as a learner is counted: it waits.
        if cluster.holds_something() {
            if let Some(leader) = dropped_by(cluster, mailbox, holders.clone()).await
                && let Err(e) = cluster.reset(&leader).await
            {
                tracing::error!(group = cluster.options.group, error = %e, "could not drop the group");
            }
            return;
        }
        join(cluster, mailbox, &holders).await;
        return;
    }
    // While leading, moves the group to its holders (hands it on when this member is not one).
    if cluster.is_leader() {
        if let Err(e) = reconcile(cluster).await {
            tracing::debug!(group = cluster.options.group, error = %e, "could not move the group yet");
        }
        return;
    }
    // Once the group no longer counts this member (it removed it: asked of the leader, whatever
    // this member's log says), drops its copy: a member that is not a holder and does not vote,
    // or one that hears from no leader (removed while it was cut off or paused, its log still
    // counts it: a holder again, it joins afresh once it has dropped its copy). A fresh
    // instance has nothing to drop.
    let in_doubt =
        cluster.leader_silent() || (!holding && !voters(cluster).contains(&cluster.id()));
    if cluster.holds_something()
        && in_doubt
        && let Some(leader) = dropped_by(cluster, mailbox, holders).await
        && let Err(e) = cluster.reset(&leader).await
    {
        tracing::error!(group = cluster.options.group, error = %e, "could not drop the group");
    }
}

/// Asks to join the group: its holders', then every member's endpoint, passed on to the
/// leader.
async fn join(cluster: &Arc<Cluster>, mailbox: &Mailbox, holders: &[String]) {
    let me = cluster.node.config.name.to_string();
    // The holders first, then every other member: the group's members may all be former
    // holders (the member that formed the group, say), which only the leader knows.
    let mut peers: Vec<String> = holders.iter().filter(|n| **n != me).cloned().collect();
    for name in members(cluster).into_values().chain(everyone(cluster)) {
        if name != me && !peers.contains(&name) {
            peers.push(name);
        }
    }
    for peer in peers {
        let Ok(mut target) = peer.parse::<NodeName>() else {
            continue;
        };
        for _hop in 0..3 {
            match super::answer::ask_to_join(cluster, mailbox, &target).await {
                Ok(Answer::Reply(v)) if v == atom("ok") => {
                    tracing::info!(group = cluster.options.group, "joined the group");
                    return;
                }
                Ok(Answer::NotLeader(Some(leader))) => target = leader,
                answer => {
                    tracing::debug!(group = cluster.options.group, %target, ?answer, "could not join the group yet");
                    break;
                }
            }
        }
    }
}

/// The group's leader, when it no longer counts this member (`{is_member, Id}` answered
/// `false`), asked through the leader this member knows, else through `peers`; `None` when it
/// still does, or no leader answers (nothing is dropped on a guess), and when it asked too
/// recently ([`Cluster::may_ask_if_counted`]: the questions space out while they change
/// nothing).
pub(crate) async fn dropped_by(
    cluster: &Cluster,
    mailbox: &Mailbox,
    peers: Vec<String>,
) -> Option<NodeName> {
    if !cluster.may_ask_if_counted() {
        return None;
    }
    let dropped = ask_if_dropped(cluster, mailbox, peers).await;
    if dropped.is_none() {
        cluster.asked_if_counted();
    }
    dropped
}

async fn ask_if_dropped(
    cluster: &Cluster,
    mailbox: &Mailbox,
    peers: Vec<String>,
) -> Option<NodeName> {
    let me = cluster.node.config.name.to_string();
    let mut asked: Vec<String> = Vec::new();
    if let Some((_, leader)) = cluster.leader() {
        asked.push(leader.to_string());
    }
    asked.extend(peers);
    for peer in asked.into_iter().filter(|n| *n != me) {
        let Ok(mut target) = peer.parse::<NodeName>() else {
            continue;
        };
        for _hop in 0..3 {
            let request = Value::pair(atom("is_member"), Value::Int(cluster.id() as i64));
            let answer = mailbox
                .call_remote_monitored(&target, &cluster.names.endpoint, request, ASK_WAIT)
                .await;
            match answer.map(Answer::of) {
                Ok(Answer::Reply(Value::Atom(a))) if a.as_str() == "true" => return None,
                Ok(Answer::Reply(Value::Atom(a))) if a.as_str() == "false" => return Some(target),
                Ok(Answer::NotLeader(Some(leader))) => target = leader,
                _ => break,
            }
        }
    }
    None
}

/// On the leader: `true` or `false` for `{is_member, Id}`, whether the group counts `id`.
pub fn answer_is_member(cluster: &Cluster, id: NodeId) -> Value {
    if !cluster.is_leader() {
        return super::answer::not_leader(cluster);
    }
    Value::boolean(members(cluster).contains_key(&id))
}

/// On the leader: whether the node `name` may join the group (it is a holder).
pub fn admits(cluster: &Cluster, name: &str) -> bool {
    !placed(cluster) || holders(cluster).iter().any(|h| h == name)
}

/// On the leader: once every holder has a member that caught up with the log, the holders
/// vote (and only they), then the members that are not holders are removed.
pub async fn reconcile(cluster: &Cluster) -> Result<(), String> {
    let holders = holders(cluster);
    if holders.is_empty() {
        return Ok(());
    }
    let eligible = view::eligible(cluster);
    let mut want = BTreeSet::new();
    for holder in &holders {
        match eligible.iter().find(|(_, name)| *name == holder) {
            Some((id, _)) => {
                want.insert(*id);
            }
            // Not joined yet, or still catching up: nothing moves until it has.
            None => return Ok(()),
        }
    }
    let voting = voters(cluster);
    if want.len() < voting.len() {
        let dropped: BTreeSet<NodeId> = voting.difference(&want).copied().collect();
        let kept = staying(cluster, &dropped).await;
        if !kept.is_empty() {
            tracing::debug!(
                group = cluster.options.group,
                ?kept,
                "voters out of group 0 but reachable and not leaving keep their votes"
            );
        }
        want.extend(kept);
    }
    if want != voting {
        let raft = cluster.raft();
        let change = raft.change_membership(ChangeMembers::ReplaceAllVoters(want.clone()), true);
        match tokio::time::timeout(CHANGE_WAIT, change).await {
            Ok(done) => done.map_err(|e| e.to_string())?,
            Err(_) => return Err("the change of the group's voters did not commit".into()),
        };
        let all = members(cluster);
        let names: Vec<&String> = want.iter().filter_map(|id| all.get(id)).collect();
        tracing::info!(group = cluster.options.group, holders = ?names, "the group's holders vote");
    }
    if !cluster.is_leader() {
        return Ok(()); // it stepped down, not being a holder: the next leader goes on
    }
    let extra: BTreeSet<NodeId> = members(cluster)
        .into_keys()
        .filter(|id| !want.contains(id))
        .collect();
    if !extra.is_empty() {
        let raft = cluster.raft();
        let change = raft.change_membership(ChangeMembers::RemoveNodes(extra.clone()), false);
        match tokio::time::timeout(CHANGE_WAIT, change).await {
            Ok(done) => done.map_err(|e| e.to_string())?,
            Err(_) => return Err("the removal of the group's former holders did not commit".into()),
        };
        tracing::info!(group = cluster.options.group, removed = ?extra, "former holders left the group");
        metrics::counter!("ash_gen_server_cluster_group_moves_total").increment(extra.len() as u64);
    }
    Ok(())
}

/// Where this member's router sends a request of the group: its leader, or when this member
/// does not know one (it holds no copy), the leader last heard of ([`note_leader`]) or else a
/// holder (which passes it to the leader). `None` when nobody is known.
pub fn target(cluster: &Cluster) -> Option<NodeName> {
    if let Some((_, leader)) = cluster.leader() {
        return Some(leader);
    }
    if !placed(cluster) || is_member(cluster) {
        return None;
    }
    if let Some(leader) = cluster.leader_hint.lock().expect("not poisoned").clone() {
        return Some(leader);
    }
    let me = cluster.node.config.name.to_string();
    let holders = holders(cluster);
    let reachable = holders
        .iter()
        .find(|h| **h != me && cluster.node.conn(h).is_some());
    reachable
        .or_else(|| holders.iter().find(|h| **h != me))
        .and_then(|h| h.parse().ok())
}

/// The members to tell of an expiry handler's subscription: every member of the cluster for a
/// placed group (any may hold it later), the group's members otherwise.
pub fn everyone(cluster: &Cluster) -> Vec<String> {
    match directory(cluster).filter(|_| placed(cluster)) {
        Some(zero) => members(&zero)
            .into_values()
            .collect::<BTreeSet<String>>()
            .into_iter()
            .collect(),
        None => members(cluster).into_values().collect(),
    }
}

/// Leaves the group (the member is stopping): it stops being a holder, and once the holders
/// that take its place have caught up and vote (the leader's [`reconcile`], here when this
/// member leads), it no longer counts; waits for that until `deadline`. The leader may remove
/// the member before the entry that stops its vote reaches it (it then never hears from the
/// leader again): a member that no leader has spoken to for [`super::LEADER_SILENCE`] asks
/// the leader whether the group still counts it.
pub async fn leave(cluster: &Arc<Cluster>, deadline: tokio::time::Instant) {
    cluster.leaving.store(true, Ordering::Release);
    let mut watch = cluster.watch();
    let mailbox = Mailbox::new(&cluster.node);
    while tokio::time::Instant::now() < deadline {
        if !voters(cluster).contains(&cluster.id()) {
            return;
        }
        if cluster.leader_silent() {
            let known = members(cluster).into_values().collect();
            if dropped_by(cluster, &mailbox, known).await.is_some() {
                tracing::info!(
                    group = cluster.options.group,
                    "the group no longer counts this member: left"
                );
                return;
            }
        }
        if holders(cluster).is_empty() {
            tracing::warn!(
                group = cluster.options.group,
                "the last member holding the group stops: its records are gone"
            );
            return;
        }
        if cluster.is_leader()
            && let Err(e) = reconcile(cluster).await
        {
            tracing::debug!(error = %e, "could not hand the group on yet");
        }
        let wait = Duration::from_millis(200);
        if let Ok(false) = tokio::time::timeout(wait, cluster.changed(&mut watch)).await {
            // The Raft core ended: nothing will change, so no hurry to look again.
            tokio::time::sleep(wait).await;
        }
    }
    tracing::warn!(
        group = cluster.options.group,
        "could not hand the group on in time: the others hold it with one replica fewer"
    );
}

/// Who to ask about the group, for a member that holds no copy of it: the leader last heard
/// of, then the holders (reachable ones first), at most once each.
pub fn candidates(cluster: &Cluster) -> Vec<NodeName> {
    let me = cluster.node.config.name.to_string();
    let mut names: Vec<String> = Vec::new();
    if let Some(leader) = cluster.leader_hint.lock().expect("not poisoned").clone() {
        names.push(leader.to_string());
    }
    let (mut reachable, others): (Vec<String>, Vec<String>) = holders(cluster)
        .into_iter()
        .partition(|h| cluster.node.conn(h).is_some());
    reachable.extend(others);
    for name in reachable {
        if name != me && !names.contains(&name) {
            names.push(name);
        }
    }
    names.into_iter().filter_map(|n| n.parse().ok()).collect()
}

/// Notes the group's leader a `not_leader` answer named (`Some`), or that the one noted did not
/// answer (`None`), for [`target`].
pub fn note_leader(cluster: &Cluster, leader: Option<NodeName>) {
    if placed(cluster) && !is_member(cluster) {
        *cluster.leader_hint.lock().expect("not poisoned") = leader;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set<'a>(names: &[&'a str]) -> BTreeSet<&'a str> {
        names.iter().copied().collect()
    }

    #[test]
    fn a_group_is_held_by_its_ranked_members_and_a_lost_one_is_replaced() {
        let all = ["a@h", "b@h", "c@h", "d@h", "e@h"];
        let names = set(&all);
        let none = BTreeSet::new();
        for group in 1..32 {
            let held = choose(&names, &names, &none, 3, group);
            assert_eq!(held.len(), 3);
            let ranked = super::super::placement::replicas_of(group, &all, 3);
            assert_eq!(held, ranked);
            // One of them unreachable for long: the next ranked takes its place.
            let lost = held[0].as_str();
            let live: BTreeSet<&str> = names.iter().copied().filter(|n| *n != lost).collect();
            let holding: BTreeSet<String> = held.iter().cloned().collect();
            let now = choose(&names, &live, &holding, 3, group);
            assert_eq!(now.len(), 3);
            assert!(!now.contains(&lost.to_string()));
            assert!(
                held.iter().skip(1).all(|h| now.contains(h)),
                "the others stay"
            );
        }
        // More members than replicas: the groups spread over them.
        let spread: BTreeSet<Vec<String>> = (1..32)
            .map(|g| choose(&names, &names, &none, 3, g))
            .collect();
        assert!(spread.len() > 1);
    }

    #[test]
    fn too_few_reachable_members_keep_their_groups() {
        let names = set(&["a@h", "b@h", "c@h"]);
        let holding: BTreeSet<String> = ["a@h", "b@h", "c@h"].map(String::from).into();
        // c unreachable, no spare: it keeps holding (never fewer holders).
        let live = set(&["a@h", "b@h"]);
        let held = choose(&names, &live, &holding, 3, 7);
        assert_eq!(held.len(), 3);
        assert!(held.contains(&"c@h".to_string()));
        // A member that does not hold the group is not made a holder while unreachable.
        let holding: BTreeSet<String> = ["a@h", "b@h"].map(String::from).into();
        assert_eq!(choose(&names, &live, &holding, 3, 7).len(), 2);
        // Fewer members than replicas: every member holds.
        assert_eq!(choose(&names, &names, &BTreeSet::new(), 5, 7).len(), 3);
    }
}
