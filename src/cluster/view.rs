//! What a member's Raft instance shows of its group: who is in it, who votes, who has caught
//! up with the leader's log, and who has been unreachable from this member for long. Read by
//! [`super::membership`] (group 0, or the one group) and [`super::holders`] (the other groups)
//! alike.

use super::Cluster;
use super::types::NodeId;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// The group's membership as this member's Raft shows it, from the server metrics: openraft
/// updates them before the full ones, and [`Cluster::changed`] waits on them.
fn membership(
    cluster: &Cluster,
) -> std::sync::Arc<openraft::StoredMembership<NodeId, super::types::Member>> {
    cluster
        .raft()
        .server_metrics()
        .borrow()
        .membership_config
        .clone()
}

/// The members Raft knows (voters and learners), by id.
pub fn members(cluster: &Cluster) -> BTreeMap<NodeId, String> {
    membership(cluster)
        .membership()
        .nodes()
        .map(|(id, m)| (*id, m.addr.clone()))
        .collect()
}

/// The voting members, by id.
pub fn voters(cluster: &Cluster) -> BTreeSet<NodeId> {
    membership(cluster).membership().voter_ids().collect()
}

/// How far (in log entries) behind the leader a learner may be and still be made a voter.
const CAUGHT_UP_LAG: u64 = 1000;

/// The members that may vote: the voters, and the learners the leader's replication shows
/// caught up with its log. A learner that has received nothing yet (one that needs the
/// snapshot, say) is not: made a voter, it would count toward every quorum before holding
/// anything, so writes would wait for it to install the snapshot, and for good if it died
/// meanwhile (openraft's own wait in `add_learner` counts a learner with nothing as caught up
/// when the log after the snapshot is short). Nor is a learner this member cannot reach now:
/// a change of voters that adds it could not commit until it is back (the joint configuration
/// needs it), and every other change of membership would wait behind it.
pub fn eligible(cluster: &Cluster) -> BTreeMap<NodeId, String> {
    let voting = voters(cluster);
    let metrics = cluster.raft().metrics().borrow().clone();
    let last = metrics.last_log_index.unwrap_or(0);
    let caught_up = |id: &NodeId| {
        let matched = metrics
            .replication
            .as_ref()
            .and_then(|r| r.get(id).cloned());
        matches!(matched, Some(Some(m)) if last.saturating_sub(m.index) <= CAUGHT_UP_LAG)
    };
    members(cluster)
        .into_iter()
        .filter(|(id, name)| {
            *id == cluster.id()
                || voting.contains(id)
                || (caught_up(id) && cluster.node.conn(name).is_some())
        })
        .collect()
}

/// How long a voter may stay unreachable before it gives its vote to a reachable member (when
/// there is one to take it): longer than an election and than a durable member's restart
/// takes, so a member that comes straight back keeps its place.
pub const GONE_AFTER: Duration = Duration::from_secs(10);

/// The members unreachable from this one for [`GONE_AFTER`] or longer.
pub fn gone(cluster: &Cluster) -> BTreeSet<NodeId> {
    let seen = cluster.unreachable.lock().expect("not poisoned");
    seen.iter()
        .filter(|(_, since)| since.elapsed() >= GONE_AFTER)
        .map(|(id, _)| *id)
        .collect()
}
