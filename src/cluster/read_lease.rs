//! Leader lease reads: after a read confirmed by a quorum (`ensure_linearizable`), the leader
//! serves further reads from its own records for a short lease, without another round.
//!
//! Safe because a follower that acknowledged the leader refuses to vote for anyone else for
//! `leader_lease` (openraft's, = the maximum election timeout) after it last heard from it; the
//! lease here is half the *minimum* election timeout, counted from *before* the confirming
//! round was sent, and ends as soon as this member is no longer leader of the same term. It
//! assumes clocks that advance at about the same rate on the members (as every lease does).

use super::types::Raft;
use parking_lot::Mutex;
use std::time::{Duration, Instant};

/// The lease of one leader term.
#[derive(Debug)]
pub struct ReadLease {
    duration: Duration,
    held: Mutex<Option<(u64, Instant)>>,
}

impl ReadLease {
    /// A lease of `duration` (at most half the minimum election timeout).
    pub fn new(duration: Duration) -> ReadLease {
        ReadLease {
            duration,
            held: Mutex::new(None),
        }
    }

    /// The term this member leads now, if it does.
    fn leading_term(raft: &Raft, id: u64) -> Option<u64> {
        let metrics = raft.metrics();
        let metrics = metrics.borrow();
        (metrics.current_leader == Some(id)).then_some(metrics.current_term)
    }

    /// Whether member `id` may serve a read now without a quorum round.
    pub fn valid(&self, raft: &Raft, id: u64) -> bool {
        let Some((term, until)) = *self.held.lock() else {
            return false;
        };
        Instant::now() < until && Self::leading_term(raft, id) == Some(term)
    }

    /// Reads are linearizable now: confirms leadership with a quorum (the round started at
    /// the current instant) unless a lease holds, then extends the lease.
    pub async fn ensure(
        &self,
        raft: &Raft,
        id: u64,
    ) -> Result<
        (),
        openraft::error::RaftError<
            u64,
            openraft::error::CheckIsLeaderError<u64, super::types::Member>,
        >,
    > {
        if self.valid(raft, id) {
            return Ok(());
        }
        let started = Instant::now();
        let term = Self::leading_term(raft, id);
        raft.ensure_linearizable().await?;
        if let Some(term) = term
            && Self::leading_term(raft, id) == Some(term)
        {
            *self.held.lock() = Some((term, started + self.duration));
        }
        Ok(())
    }
}
