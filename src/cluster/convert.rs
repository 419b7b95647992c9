//! A single node becomes a cluster member, its records with it, when another Rust node joins
//! it (`start --join` naming a node that was started without `--replicas`; see
//! [`super::role`]).
//!
//! The node keeps serving throughout. In order:
//!
//! 1. Its record pids, the ones already given out included, pass their requests on to
//!    `ash_gen_server` by resource and key instead of serving them (writes are to go through
//!    the log).
//! 2. It starts as a member adopting its record service ([`super::ClusterOptions::adopt`]): the
//!    member's router takes over the name `ash_gen_server` and the record service is renamed
//!    [`super::state_machine::RECORDS_NAME`] in the same step, then it forms a cluster of one.
//!    From here every write goes through the log.
//! 3. Writes that started before (a request being served while the name moved, a record's turn
//!    already queued) are let finish: a short grace, then one request through every record's
//!    actor, answered after everything queued before it.
//! 4. A snapshot captures the records, and the log before it is dropped: a node admitted now
//!    receives the snapshot, the records that never were in the log included. Until then the
//!    member admits nobody.

use super::{Cluster, ClusterOptions};
use crate::node::Node;
use crate::protocol::{SERVER_NAME, Service};
use crate::record::{Host, Op, Outcome, Reply, Resource};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::oneshot;

/// How long a request that started before the name moved is given to reach its record.
const GRACE: Duration = Duration::from_secs(1);

/// How long each step (a leader, every record's turn, the snapshot, the purge) may take.
const STEP: Duration = Duration::from_secs(30);

/// Why the node could not become a member.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// Its record pids already pass their requests on (it is a member already).
    #[error("this node's record service already belongs to a cluster")]
    AlreadyMember,
    /// The member would not start.
    #[error(transparent)]
    Start(#[from] super::ClusterError),
    /// A step did not finish in time.
    #[error("{0} did not happen within {STEP:?}")]
    TimedOut(&'static str),
    /// Raft refused a step.
    #[error("raft: {0}")]
    Raft(String),
}

/// Makes the single node serving `service` a member of a new cluster of one that holds its
/// records, with `options` (its `join` list is not used: others join this member).
pub async fn convert(
    node: &Arc<Node>,
    service: &Arc<Service>,
    mut options: ClusterOptions,
) -> Result<Arc<Cluster>, ConvertError> {
    if !service.pass_pid_requests_to(SERVER_NAME) {
        return Err(ConvertError::AlreadyMember);
    }
    options.adopt = true;
    options.join.clear();
    let cluster = Cluster::start(node, &service.records, options).await?;
    tracing::info!(
        id = cluster.id,
        "becoming a cluster member: requests now go through the log"
    );
    let leader = cluster.await_leader(STEP).await;
    if leader.map(|(id, _)| id) != Some(cluster.id) {
        return Err(ConvertError::TimedOut("leading the new cluster"));
    }
    tokio::time::sleep(GRACE).await;
    let records = every_turn_done(service).await?;
    let index = snapshot_and_purge(&cluster).await?;
    cluster.admitting.store(true, Ordering::Release);
    tracing::info!(
        records,
        snapshot = index,
        "became a cluster member: its records are in the cluster's snapshot"
    );
    Ok(cluster)
}

/// Sends a `get` through every record's actor and waits for each answer: whatever was queued
/// before it is done. Returns the number of records.
async fn every_turn_done(service: &Service) -> Result<usize, ConvertError> {
    let mut waits = Vec::new();
    for resource in service.records.store.all() {
        for actor in resource.actors() {
            let (tx, rx) = oneshot::channel();
            actor.deliver(
                &*service.records,
                crate::record::Envelope::Call(Some(Box::new(Done(tx))), Op::Get),
            );
            waits.push(rx);
        }
    }
    let n = waits.len();
    let all = async {
        for rx in waits {
            let _ = rx.await;
        }
    };
    tokio::time::timeout(STEP, all)
        .await
        .map_err(|_| ConvertError::TimedOut("every record's queued turns"))?;
    Ok(n)
}

/// Builds a snapshot of what this member applied and drops the log it covers; returns its
/// last index.
async fn snapshot_and_purge(cluster: &Cluster) -> Result<u64, ConvertError> {
    let raft_error =
        |e: openraft::error::Fatal<super::types::NodeId>| ConvertError::Raft(e.to_string());
    let applied = cluster.raft.metrics().borrow().last_applied;
    cluster
        .raft
        .trigger()
        .snapshot()
        .await
        .map_err(raft_error)?;
    let snapshot = cluster
        .raft
        .wait(Some(STEP))
        .metrics(
            |m| m.snapshot.is_some() && m.snapshot >= applied,
            "snapshot",
        )
        .await
        .map_err(|_| ConvertError::TimedOut("the snapshot of the records"))?
        .snapshot
        .expect("waited for a snapshot");
    cluster
        .raft
        .trigger()
        .purge_log(snapshot.index)
        .await
        .map_err(raft_error)?;
    cluster
        .raft
        .wait(Some(STEP))
        .metrics(|m| m.purged >= Some(snapshot), "purge")
        .await
        .map_err(|_| ConvertError::TimedOut("dropping the log before the snapshot"))?;
    Ok(snapshot.index)
}

/// Tells that a record's turn came.
struct Done(oneshot::Sender<()>);

impl Reply for Done {
    fn send(self: Box<Self>, _svc: &dyn Host, _outcome: Outcome) {
        let _ = self.0.send(());
    }

    fn gone(self: Box<Self>, _svc: &dyn Host, _resource: &Arc<Resource>, _op: Op) {
        let _ = self.0.send(());
    }
}
