//! Record pids follow the leader. `whereis` is served by the member that leads, so a record's
//! pid lives there; when another member leads, this member's record pids end with
//! `{shutdown, {moved, Leader}}` — their monitors get `'DOWN'` with that reason, their links
//! an exit signal — and `whereis` gives the record's new pid, on the new leader. The records
//! themselves stay (every member holds them): only their pids move. A member that leaves the
//! cluster (drained) hands its pids over the same way, once another member leads
//! ([`hand_over`]).

use super::Cluster;
use crate::node::Mailbox;
use crate::term::{Atom, Value};
use erl_dist::node::NodeName;
use std::sync::Arc;
use std::time::Duration;

/// How often a member that does not lead checks for record pids given out meanwhile (a
/// `whereis` answered under a read lease just before another member took over).
const RECHECK: Duration = Duration::from_secs(1);

/// How long a member that left waits for another to lead before its record pids end with it.
pub const HAND_OVER_WAIT: Duration = Duration::from_secs(5);

/// `{shutdown, {moved, Leader}}`.
pub fn moved_reason(leader: &NodeName) -> Value {
    let atom = |name: &str| Value::Atom(Atom::new(name).expect("a node name is a valid atom"));
    Value::pair(
        atom("shutdown"),
        Value::pair(atom("moved"), atom(&leader.to_string())),
    )
}

/// Watches who leads and lets this member's record pids go when another member does.
pub fn spawn(cluster: &Arc<Cluster>) {
    let weak = Arc::downgrade(cluster);
    let mut watch = cluster.watch();
    tokio::spawn(async move {
        loop {
            let Some(cluster) = weak.upgrade() else {
                return;
            };
            let changed = tokio::time::timeout(RECHECK, cluster.changed(&mut watch)).await;
            if matches!(changed, Ok(false)) {
                return; // the raft core ended
            }
            if cluster.records.pids() == 0 {
                continue;
            }
            if let Some((leader, name)) = cluster.leader()
                && leader != cluster.id()
            {
                let released = cluster.records.release_pids(&moved_reason(&name));
                if released > 0 {
                    tracing::info!(leader = %name, pids = released, "record pids moved to the leader");
                }
            }
        }
    });
}

/// The `leader` of a `cluster` answer (`{ok, #{leader => Node, ...}}`).
fn leader_of(answer: &Value) -> Option<String> {
    match answer.as_tuple()? {
        [ok, info] if ok.as_atom()?.as_str() == "ok" => {
            let leader = info.map_get_atom(Atom::from_static("leader"))?.as_atom()?;
            (leader.as_str() != "undefined").then(|| leader.as_str().to_string())
        }
        _ => None,
    }
}

/// A member that left the cluster (drained) and still holds record pids: asks the others who
/// leads now (they elect a leader once this one, out of the membership, stepped down), for up
/// to `timeout`, and ends the pids with `{shutdown, {moved, Leader}}`. Without an answer in
/// time the pids end with the node (monitors get `noconnection`).
pub async fn hand_over(cluster: &Arc<Cluster>, timeout: Duration) {
    let members = super::membership::members(cluster);
    if cluster.records.pids() == 0 || members.contains_key(&cluster.id()) {
        return; // nothing to hand over, or still a member (it could not leave)
    }
    let me = cluster.node.config.name.to_string();
    let others: Vec<NodeName> = members
        .into_values()
        .filter(|name| *name != me)
        .filter_map(|name| name.parse().ok())
        .collect();
    let mailbox = Mailbox::new(&cluster.node);
    let deadline = tokio::time::Instant::now() + timeout;
    let ask = Value::Atom(Atom::from_static("cluster"));
    while tokio::time::Instant::now() < deadline {
        for other in &others {
            let Ok(answer) = mailbox
                .call_remote(other, &cluster.names.router, ask.clone(), RECHECK)
                .await
            else {
                continue;
            };
            if let Some(leader) = leader_of(&answer).filter(|leader| *leader != me)
                && let Ok(leader) = leader.parse::<NodeName>()
            {
                let released = cluster.records.release_pids(&moved_reason(&leader));
                tracing::info!(leader = %leader, pids = released, "record pids handed over");
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tracing::warn!("no other member leads yet: this member's record pids end with it");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reason_names_the_new_leader() {
        let leader: NodeName = "b@127.0.0.1".parse().unwrap();
        assert_eq!(
            moved_reason(&leader),
            crate::term::parse_term("{shutdown, {moved, 'b@127.0.0.1'}}").unwrap()
        );
    }

    #[test]
    fn reads_the_leader_of_a_cluster_answer() {
        let t = |s: &str| crate::term::parse_term(s).unwrap();
        assert_eq!(
            leader_of(&t("{ok, #{leader => 'b@h', healthy => true}}")).as_deref(),
            Some("b@h")
        );
        assert_eq!(leader_of(&t("{ok, #{leader => undefined}}")), None);
        assert_eq!(leader_of(&t("{error, nope}")), None);
    }
}
