//! What a record can be asked to do ([`Op`], with an [`Upsert`]'s arguments) and how it went
//! ([`Outcome`], before the protocol renders it as a reply term).

use super::error::StoreError;
use crate::query::expr::Atomics;
use crate::query::filter::Expr;
use crate::term::{Atom, Record};
use std::sync::Arc;

/// A fault to inject (tests only).
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Panic while handling.
    Panic,
    /// Return an internal error while handling.
    Error,
    /// Apply these changes to the store (where queries, identities and keys see them), then
    /// panic before the turn commits: the failure strikes half-way through an update.
    AfterChange(Record),
}

/// Arguments of an upsert.
#[derive(Debug, Clone)]
pub struct Upsert {
    /// The record to create when none matches.
    pub record: Record,
    /// The fields that identify the existing record.
    pub keys: Vec<Atom>,
    /// What to merge into an existing record.
    pub set: Record,
    /// Only update when this holds for the existing record.
    pub condition: Option<Expr>,
    /// Value expressions merged into a matching record, evaluated against it (with
    /// `{incoming, Field}` reading `record`).
    pub atomics: Atomics,
    /// When a record it creates is born (Unix milliseconds); now when `None`. A cluster's
    /// replicas and replays all pass the leader's time, so they agree on it.
    pub born_wall: Option<i64>,
}

/// What a record can be asked to do.
#[derive(Debug)]
pub enum Op {
    /// Read it.
    Get,
    /// Merge changes, if `filter` holds.
    Update {
        /// The changes.
        changes: Record,
        /// The condition.
        filter: Option<Expr>,
        /// Value expressions evaluated against the record as it is, merged after `changes`.
        atomics: Atomics,
    },
    /// Remove it, if `filter` holds.
    Destroy {
        /// The condition.
        filter: Option<Expr>,
    },
    /// The update half of an upsert.
    Upsert(Box<Upsert>),
    /// Reset the inactivity timer.
    KeepAlive,
    /// Fail on purpose.
    Fault(Fault),
}

impl Op {
    /// The operation with its filters comparing typed fields by their type.
    pub fn bound(self, types: &Arc<crate::query::Types>) -> Op {
        if types.is_empty() {
            return self;
        }
        match self {
            Op::Update {
                changes,
                filter,
                atomics,
            } => Op::Update {
                changes,
                filter: filter.map(|f| f.bind(types)),
                atomics,
            },
            Op::Destroy { filter } => Op::Destroy {
                filter: filter.map(|f| f.bind(types)),
            },
            other => other,
        }
    }
}

/// How an upsert went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpsertKind {
    /// No record matched: created.
    Created,
    /// A record matched and was updated.
    Updated,
    /// A record matched but the condition did not hold.
    Skipped,
}

/// The result of an operation, before it is rendered as a reply term.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// `ok`.
    Ok,
    /// `ok` for a destroy: the record as it was.
    Destroyed(Record),
    /// `{ok, Record}`.
    Record(Record),
    /// `{ok, created | updated | skipped, Record}`.
    Upserted(UpsertKind, Record),
    /// `{error, Reason}`.
    Error(StoreError),
}
