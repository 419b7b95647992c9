//! Forming a group again from the copy one member holds, once it has lost a majority of its
//! voters for good (`ash-gen-server recover --node N [--group G]`: the endpoint's `recover`).
//!
//! Raft elects a leader only with a majority of the group's voters. A group that lost it for
//! good (two of three voters killed, without data directories: they come back empty under new
//! ids, which only a leader could admit) never has a leader again by itself, and its records
//! are unavailable for ever. Asked to, a member holding a copy of the group forms it again:
//!
//! 1. it admits nobody until the last step ([`super::Cluster::admitting`]);
//! 2. its Raft core for the group stops and a new instance, with a new id, takes its place;
//!    the records stay (watchers of the group follow the new instance, as after a reset);
//! 3. the new instance forms a group of this member alone, which it leads;
//! 4. a snapshot captures the records and the log before it is dropped, so the members that
//!    join next receive them ([`super::convert`] seeds a cluster from a single node alike).
//!
//! Then the group grows back as ever: the members that take the lost voters' places join it
//! and catch up; one that held a copy under the old group finds the group no longer counts
//! it, drops its copy and joins again.
//!
//! It is a last resort and unsafe by nature, as etcd's `--force-new-cluster` or CockroachDB's
//! loss-of-quorum recovery: writes that only the lost voters had are gone (the request ids
//! this member remembered stay with its records, [`super::state_machine::Remembered`], so a
//! write it applied and a client retries is still applied once). So it refuses while the group may
//! still come back by itself: when a majority of its voters is reachable from this member,
//! when a leader spoke to this member in the last [`super::LEADER_SILENCE`], and with
//! `--data-dir` (restarted with their directories, the lost members bring the majority back)
//! unless the operator says the lost members' directories are lost for good
//! (`{recover, lost_for_good}`, `recover --lost-for-good`); and when another reachable member
//! still leads the group without a majority, it names that member, whose copy holds every
//! write the group acknowledged.
//!
//! With a data directory the old instance's files are moved into `recovered-<old id>` beside
//! them ([`super::data_dir::set_aside`]) and the new instance starts its own there; the
//! snapshot of step 4 is written to it. A lost member must then never start again with its
//! old directory: a majority of the old voters back with theirs would elect a leader of the
//! old group beside the new one. Started with an empty directory, it joins as a new member.

use super::Cluster;
use super::convert::{STEP, snapshot_and_purge, until_done};
use super::view::{members, voters};
use crate::term::{Atom, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// What forming the group again did.
struct Formed {
    /// This member's Raft id in the group before.
    old: super::types::NodeId,
    /// Its id in the group formed again.
    new: super::types::NodeId,
    /// The records of the group's snapshot.
    records: usize,
    /// The snapshot's last log index.
    snapshot: u64,
}

/// The endpoint's answer to `recover` (`lost_for_good`: `{recover, lost_for_good}`, see the
/// module's doc): `{ok, #{group, old_id, new_id, records, snapshot}}` once the group is formed
/// again from this member's copy; `{error, Message}` saying why not.
pub async fn recover(cluster: &Arc<Cluster>, lost_for_good: bool) -> Value {
    let atom = |name: &'static str| Value::Atom(Atom::from_static(name));
    match form_again(cluster, lost_for_good).await {
        Ok(formed) => Value::pair(
            atom("ok"),
            Value::map(vec![
                (atom("group"), Value::Int(i64::from(cluster.options.group))),
                (atom("old_id"), Value::Int(formed.old as i64)),
                (atom("new_id"), Value::Int(formed.new as i64)),
                (atom("records"), Value::Int(formed.records as i64)),
                (atom("snapshot"), Value::Int(formed.snapshot as i64)),
            ]),
        ),
        Err(why) => Value::pair(atom("error"), Value::from(why.as_str())),
    }
}

/// Why the group may still come back by itself (or this member cannot form it), if it may.
fn refusal(cluster: &Cluster, lost_for_good: bool) -> Option<String> {
    let group = cluster.options.group;
    if cluster.options.data_dir.is_some() && !lost_for_good {
        return Some(format!(
            "this member keeps group {group} in a data directory: start the lost members again with theirs, and the group goes on with its majority back (if their directories are lost for good, and will never be started again, recover with --lost-for-good)"
        ));
    }
    if cluster.leaving.load(Ordering::Acquire) {
        return Some("this member is leaving the cluster".to_string());
    }
    if !super::holders::is_member(cluster) || !cluster.holds_something() {
        return Some(format!("this member holds no copy of group {group}"));
    }
    let me = cluster.id();
    let leader = cluster
        .leader()
        .filter(|(id, name)| *id != me && cluster.node.conn(&name.to_string()).is_some());
    let all = members(cluster);
    let voting = voters(cluster);
    let reachable = voting
        .iter()
        .filter(|id| {
            **id == me
                || all
                    .get(id)
                    .is_some_and(|name| cluster.node.conn(name).is_some())
        })
        .count();
    if reachable * 2 > voting.len() {
        return Some(match leader {
            Some((_, name)) => format!("group {group} has a leader, {name}: nothing to recover"),
            None => format!(
                "{reachable} of the {} voters of group {group} are reachable from this member: the group elects a leader by itself",
                voting.len()
            ),
        });
    }
    // A leader cut off from the majority leads on (it hears of no newer term), and keeps this
    // member hearing from it: it holds every write the group acknowledged.
    if let Some((_, name)) = leader {
        return Some(format!(
            "group {group}'s leader, {name}, leads it on without a majority of its voters: recover on it (--node {name}), which holds every write the group acknowledged"
        ));
    }
    if !cluster.is_leader() && !cluster.leader_silent() {
        return Some(format!(
            "a leader of group {group} spoke to this member less than {} s ago: ask again once the group has had no leader for that long",
            super::LEADER_SILENCE.as_secs()
        ));
    }
    None
}

async fn form_again(cluster: &Arc<Cluster>, lost_for_good: bool) -> Result<Formed, String> {
    if let Some(why) = refusal(cluster, lost_for_good) {
        return Err(why);
    }
    let group = cluster.options.group;
    let lost: Vec<String> = {
        let all = members(cluster);
        voters(cluster)
            .iter()
            .filter(|id| **id != cluster.id())
            .filter_map(|id| all.get(id).cloned())
            .collect()
    };
    // One at a time: a second request finds the member admitting nobody.
    if cluster
        .admitting
        .compare_exchange(true, false, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return Err(format!(
            "group {group} is being formed again, or takes a single node's records in, already"
        ));
    }
    let old = cluster.retire().await;
    // With a data directory, the old instance's files are kept aside for the operator; the
    // new instance starts with none (a new id, an empty log).
    let aside = match &cluster.options.data_dir {
        Some(dir) => match super::data_dir::set_aside(dir, &format!("recovered-{}", old.id)) {
            Ok(to) => Some(to),
            Err(e) => {
                // The files stay where they were: the member goes on as it was.
                let again = cluster
                    .open_instance(false)
                    .await
                    .map_err(|e| format!("could not start group {group} again: {e}"))?;
                cluster.install(again);
                cluster.admitting.store(true, Ordering::Release);
                return Err(format!(
                    "could not set group {group}'s files in {} aside: {e}",
                    dir.display()
                ));
            }
        },
        None => None,
    };
    let fresh = cluster
        .open_instance(false)
        .await
        .map_err(|e| format!("could not start a new instance of group {group}: {e}"))?;
    let new = fresh.id;
    cluster.install(fresh);
    let mut alone = BTreeMap::new();
    alone.insert(new, cluster.member());
    cluster
        .raft()
        .initialize(alone)
        .await
        .map_err(|e| format!("could not form group {group} again: {e}"))?;
    tracing::warn!(
        group,
        old = old.id,
        new,
        ?lost,
        aside = ?aside,
        "formed the group again from this member's copy (recover): writes only the lost voters had are gone"
    );
    // From here this member leads the group: the records go into a snapshot for those who
    // join next, tried again until they are (nobody is admitted until then).
    let (records, snapshot) = until_done(
        "forming the group again",
        || async {
            if cluster.await_leader(STEP).await.map(|(id, _)| id) != Some(new) {
                return Err(super::convert::ConvertError::TimedOut("leading the group"));
            }
            let records = cluster.records.store.total_records();
            Ok((records, snapshot_and_purge(cluster).await?))
        },
        || cluster.stop_reason(),
    )
    .await
    .map_err(|e| e.to_string())?;
    cluster.admitting.store(true, Ordering::Release);
    tracing::info!(
        group,
        records,
        snapshot,
        "the group formed again holds this member's records: members may join it"
    );
    metrics::counter!("ash_gen_server_cluster_groups_recovered_total").increment(1);
    Ok(Formed {
        old: old.id,
        new,
        records,
        snapshot,
    })
}
