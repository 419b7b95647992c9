//! The member's cluster gauges, sampled once a second (served with the node's other metrics by
//! `--metrics-addr`): whether it leads, the members and voters, whether the cluster is healthy,
//! the log's last index and, on the leader, how many entries each other member is behind.
//! Admissions and departures are counted where they happen ([`super::membership`]).

use super::Cluster;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// Samples `cluster`'s gauges every second while it runs.
pub fn spawn(cluster: &Arc<Cluster>) {
    let weak: Weak<Cluster> = Arc::downgrade(cluster);
    tokio::spawn(async move {
        let mut every_second = tokio::time::interval(Duration::from_secs(1));
        loop {
            every_second.tick().await;
            let Some(cluster) = weak.upgrade() else {
                return;
            };
            sample(&cluster);
        }
    });
}

/// Sets the gauges now.
pub fn sample(cluster: &Cluster) {
    let metrics = cluster.raft().metrics().borrow().clone();
    let members = super::membership::members(cluster);
    let voters = super::membership::voters(cluster);
    metrics::gauge!("ash_gen_server_cluster_leader").set(
        if metrics.current_leader == Some(cluster.id()) {
            1.0
        } else {
            0.0
        },
    );
    metrics::gauge!("ash_gen_server_cluster_members").set(members.len() as f64);
    metrics::gauge!("ash_gen_server_cluster_voters").set(voters.len() as f64);
    metrics::gauge!("ash_gen_server_cluster_healthy").set(if super::membership::healthy(cluster) {
        1.0
    } else {
        0.0
    });
    let last = metrics.last_log_index.unwrap_or(0);
    metrics::gauge!("ash_gen_server_cluster_last_log_index").set(last as f64);
    if let Some(replication) = &metrics.replication {
        for (id, matched) in replication {
            if *id == cluster.id() {
                continue;
            }
            let Some(name) = members.get(id) else {
                continue;
            };
            let behind = last.saturating_sub(matched.map_or(0, |m| m.index));
            metrics::gauge!("ash_gen_server_cluster_replication_lag_entries", "member" => name.clone())
                .set(behind as f64);
        }
    }
}
