//! Record pids follow the leader. `whereis` is served by the member that leads, so a record's
//! pid lives there; when another member leads, this member's record pids end with
//! `{shutdown, {moved, Leader}}` — their monitors get `'DOWN'` with that reason, their links
//! an exit signal — and `whereis` gives the record's new pid, on the new leader. The records
//! themselves stay (every member holds them): only their pids move.

use super::Cluster;
use crate::term::{Atom, Value};
use erl_dist::node::NodeName;
use std::sync::Arc;
use std::time::Duration;

/// How often a member that does not lead checks for record pids given out meanwhile (a
/// `whereis` answered under a read lease just before another member took over).
const RECHECK: Duration = Duration::from_secs(1);

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
    let mut metrics = cluster.raft.metrics();
    tokio::spawn(async move {
        loop {
            let changed = tokio::time::timeout(RECHECK, metrics.changed()).await;
            if matches!(changed, Ok(Err(_))) {
                return; // the raft core ended
            }
            let Some(cluster) = weak.upgrade() else {
                return;
            };
            if cluster.records.pids() == 0 {
                continue;
            }
            if let Some((leader, name)) = cluster.leader()
                && leader != cluster.id
            {
                let released = cluster.records.release_pids(&moved_reason(&name));
                if released > 0 {
                    tracing::info!(leader = %name, pids = released, "record pids moved to the leader");
                }
            }
        }
    });
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
}
