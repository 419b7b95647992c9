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
//! 5. With `--data-dir`, the Raft log and snapshot are kept in the node's data directory beside
//!    its journal, which goes on recording every change until the snapshot is on disk; then
//!    the journal's file is removed and it writes no more. Restarted with the directory, the
//!    node is a member (its Raft log); stopped before the journal went, it is the single node
//!    it was ([`recover_interrupted`]): nobody was admitted yet, and the journal has it all.
//!
//! Once the member runs (step 2) there is no way back: a later step that fails is tried again,
//! with growing pauses, until it succeeds, unless the member's Raft core stopped (then the
//! node stops as any such member does).

use super::{Cluster, ClusterOptions};
use crate::node::Node;
use crate::protocol::{SERVER_NAME, Service};
use crate::record::{Host, Op, Outcome, Reply, Resource};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::oneshot;

/// How long a request that started before the name moved is given to reach its record.
const GRACE: Duration = Duration::from_secs(1);

/// How long each step (a leader, every record's turn, the snapshot, the purge) may take.
pub(super) const STEP: Duration = Duration::from_secs(30);

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
    /// The single node's journal could not be retired.
    #[error(transparent)]
    Journal(crate::storage::JournalError),
}

/// A data directory holding a single node's journal and a member's Raft files belongs to a
/// node stopped while it became a member (step 5 above): the journal still holds every record
/// and nobody had been admitted, so the Raft files are removed and the node starts as the
/// single node it was. Returns whether there were any.
pub fn recover_interrupted(dir: &Path) -> std::io::Result<bool> {
    if !dir.join(crate::protocol::durable::JOURNAL_FILE).exists() {
        return Ok(false);
    }
    super::data_dir::remove(dir)
}

/// Makes the single node serving `service` a member of a new cluster of one that holds its
/// records, with `options` (its `join` list is not used: others join this member).
/// `started` is given the member as soon as it runs (from then on it is this node's member:
/// stopping it or its Raft core failing is handled as for any member). Fails before the member
/// starts (the node then stays the single node it was), or when its Raft core stops; a step
/// after the start that fails otherwise (one over 30 s) is tried again until it succeeds, the
/// member admitting nobody meanwhile.
pub async fn convert(
    node: &Arc<Node>,
    service: &Arc<Service>,
    mut options: ClusterOptions,
    started: impl FnOnce(&Arc<Cluster>),
) -> Result<Arc<Cluster>, ConvertError> {
    if !service.pass_pid_requests_to(SERVER_NAME) {
        return Err(ConvertError::AlreadyMember);
    }
    options.adopt = true;
    options.join.clear();
    let cluster = Cluster::start(node, &service.records, options, None).await?;
    tracing::info!(
        id = cluster.id(),
        "becoming a cluster member: requests now go through the log"
    );
    started(&cluster);
    // From here the node is a member (its router holds `ash_gen_server`): there is no going
    // back, so a step that fails is tried again until the records are in a snapshot.
    let (records, index) = until_done(
        "becoming a cluster member",
        || finish(&cluster, service),
        || cluster.stop_reason(),
    )
    .await?;
    cluster.admitting.store(true, Ordering::Release);
    tracing::info!(
        records,
        snapshot = index,
        "became a cluster member: its records are in the cluster's snapshot"
    );
    Ok(cluster)
}

/// Runs `steps` until they succeed, pausing after each failure ([`RETRY_FIRST`], doubling up
/// to [`STEP`]); gives up when `stopped` says why nothing can succeed any more (the Raft core
/// stopped). `doing` names the work in the warnings (the member admits nobody meanwhile).
pub(super) async fn until_done<T, F, Fut>(
    doing: &str,
    mut steps: F,
    stopped: impl Fn() -> Option<String>,
) -> Result<T, ConvertError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ConvertError>>,
{
    let mut pause = RETRY_FIRST;
    loop {
        match steps().await {
            Ok(done) => return Ok(done),
            Err(e) => {
                if let Some(why) = stopped() {
                    return Err(ConvertError::Raft(why));
                }
                tracing::warn!(
                    error = %e,
                    retry_in = ?pause,
                    "{doing}: a step failed, trying again (admitting nobody until then)"
                );
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(STEP);
            }
        }
    }
}

/// The first pause before a failed step of [`convert`] is tried again (doubling up to
/// [`STEP`]).
const RETRY_FIRST: Duration = Duration::from_secs(1);

/// Steps 3 to 5 of the module's list, once the member runs: leading, every record's queued
/// turns done, the records in a snapshot and the log before it gone, the journal retired.
/// Each can run again after a failure. Returns the number of records and the snapshot's index.
async fn finish(cluster: &Cluster, service: &Service) -> Result<(usize, u64), ConvertError> {
    let leader = cluster.await_leader(STEP).await;
    if leader.map(|(id, _)| id) != Some(cluster.id()) {
        return Err(ConvertError::TimedOut("leading the new cluster"));
    }
    tokio::time::sleep(GRACE).await;
    let records = every_turn_done(service).await?;
    let index = snapshot_and_purge(cluster).await?;
    if let Some(journal) = service.records.store.journal() {
        // The Raft snapshot on disk holds every record now, the Raft log what follows.
        journal.retire().map_err(ConvertError::Journal)?;
        tracing::info!("the single node's journal is retired: its records are in the raft log");
    }
    Ok((records, index))
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
pub(super) async fn snapshot_and_purge(cluster: &Cluster) -> Result<u64, ConvertError> {
    let raft_error =
        |e: openraft::error::Fatal<super::types::NodeId>| ConvertError::Raft(e.to_string());
    let applied = cluster.raft().metrics().borrow().last_applied;
    cluster
        .raft()
        .trigger()
        .snapshot()
        .await
        .map_err(raft_error)?;
    let snapshot = cluster
        .raft()
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
        .raft()
        .trigger()
        .purge_log(snapshot.index)
        .await
        .map_err(raft_error)?;
    cluster
        .raft()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raft_files_beside_a_journal_are_an_interrupted_change_and_go() {
        let dir = std::env::temp_dir().join(format!("ash-convert-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let d = Dir(dir);
        let journal = d.path().join(crate::protocol::durable::JOURNAL_FILE);
        // A member's directory (no journal) is left alone.
        std::fs::write(d.path().join(super::super::log_store::LOG_FILE), b"log").unwrap();
        assert!(!recover_interrupted(d.path()).unwrap());
        assert!(d.path().join(super::super::log_store::LOG_FILE).exists());
        // A journal and Raft files: the node stopped while it became a member.
        std::fs::write(&journal, b"records").unwrap();
        std::fs::write(d.path().join(super::super::snapshot::SNAPSHOT_FILE), b"s").unwrap();
        std::fs::write(d.path().join(super::super::identity::MEMBER_FILE), b"m").unwrap();
        assert!(recover_interrupted(d.path()).unwrap());
        let left: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(
            left,
            vec![crate::protocol::durable::JOURNAL_FILE.to_string()]
        );
        // A single node's directory: nothing to do.
        assert!(!recover_interrupted(d.path()).unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn failed_steps_are_tried_again_with_growing_pauses() {
        let tries = std::sync::atomic::AtomicU32::new(0);
        let started = tokio::time::Instant::now();
        let done = until_done(
            "a test",
            || async {
                match tries.fetch_add(1, Ordering::Relaxed) {
                    0..=6 => Err(ConvertError::TimedOut("a step")),
                    n => Ok(n),
                }
            },
            || None,
        )
        .await
        .unwrap();
        assert_eq!(done, 7, "the eighth try succeeds and its answer is kept");
        // Pauses of 1, 2, 4, 8 and 16 s, then 30 s (capped) twice.
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(1 + 2 + 4 + 8 + 16 + 30 + 30)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stopped_raft_core_ends_the_retries() {
        let tries = std::sync::atomic::AtomicU32::new(0);
        let failed = until_done(
            "a test",
            || async {
                tries.fetch_add(1, Ordering::Relaxed);
                Err::<(), _>(ConvertError::TimedOut("a step"))
            },
            || (tries.load(Ordering::Relaxed) >= 3).then(|| "storage error".to_string()),
        )
        .await;
        assert!(
            matches!(&failed, Err(ConvertError::Raft(why)) if why == "storage error"),
            "{failed:?}"
        );
        assert_eq!(tries.load(Ordering::Relaxed), 3);
    }

    /// A scratch directory, removed at the end.
    struct Dir(std::path::PathBuf);

    impl Dir {
        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
