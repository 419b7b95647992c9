//! The member's cluster gauges, sampled once a second (served with the node's other metrics by
//! `--metrics-addr`): whether it leads, the members and voters, whether the cluster is healthy,
//! the log's last index and, on the leader, how many entries each other member is behind.
//! Admissions and departures are counted where they happen ([`super::membership`]). Those are
//! group 0's; with `--shards` > 1 every other group has its own, labelled `group`: whether this
//! member holds it and leads it, its log's last index here and, on its leader, how far behind
//! each other member is.

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
    if cluster.options.group > 0 {
        return sample_group(cluster);
    }
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
    for (name, behind) in lags(cluster, &metrics, &members) {
        metrics::gauge!("ash_gen_server_cluster_replication_lag_entries", "member" => name)
            .set(behind as f64);
    }
}

/// On the leader, how many log entries each other member is behind, by name (empty elsewhere).
fn lags(
    cluster: &Cluster,
    metrics: &openraft::RaftMetrics<super::types::NodeId, super::types::Member>,
    members: &std::collections::BTreeMap<super::types::NodeId, String>,
) -> Vec<(String, u64)> {
    let last = metrics.last_log_index.unwrap_or(0);
    let Some(replication) = metrics
        .replication
        .as_ref()
        .filter(|_| metrics.current_leader == Some(cluster.id()))
    else {
        return Vec::new();
    };
    replication
        .iter()
        .filter(|(id, _)| **id != cluster.id())
        .filter_map(|(id, matched)| {
            let behind = last.saturating_sub(matched.map_or(0, |m| m.index));
            Some((members.get(id)?.clone(), behind))
        })
        .collect()
}

/// Sets the gauges of a group G > 0, labelled `group`.
fn sample_group(cluster: &Cluster) {
    let group = cluster.options.group.to_string();
    let metrics = cluster.raft().metrics().borrow().clone();
    let leading = metrics.current_leader == Some(cluster.id());
    let members = super::membership::members(cluster);
    let holding = members.contains_key(&cluster.id());
    metrics::gauge!("ash_gen_server_cluster_group_leader", "group" => group.clone())
        .set(if leading { 1.0 } else { 0.0 });
    metrics::gauge!("ash_gen_server_cluster_group_holding", "group" => group.clone())
        .set(if holding { 1.0 } else { 0.0 });
    let last = metrics.last_log_index.unwrap_or(0);
    metrics::gauge!("ash_gen_server_cluster_group_last_log_index", "group" => group.clone())
        .set(last as f64);
    for (name, behind) in lags(cluster, &metrics, &members) {
        metrics::gauge!(
            "ash_gen_server_cluster_group_replication_lag_entries",
            "group" => group.clone(),
            "member" => name
        )
        .set(behind as f64);
    }
}
