//! Records: the registry of resources, one actor per record, supervision, lifetimes.
//!
//! [`registry`] maps `{Resource, PrimaryKey}` to a record's actor; [`actor`] is the actor;
//! [`supervisor`] decides restarts; [`timers`] and [`expiry`] make records expire. The functions
//! here are the operations that start outside any one actor: creating a record and upserting.

pub mod actor;
pub mod expiry;
pub mod registry;
pub mod supervisor;
pub mod timers;

pub use actor::{Envelope, Fault, Op, Outcome, RecordActor, Reply, ReplyTo, Upsert, UpsertKind};
pub use expiry::Expiry;
pub use registry::{Identity, Key, Resource, ResourceConfig, Store, StoreError};
pub use supervisor::RestartPolicy;
pub use timers::Timers;

use crate::node::Node;
use crate::term::Record;
use std::sync::Arc;

/// Sends `outcome` to `reply`, if anyone waits for it.
pub fn respond(node: &Node, reply: ReplyTo, outcome: Outcome) {
    if let Some(reply) = reply {
        reply.send(node, outcome);
    }
}

/// Creates a record: its actor starts, and its lifetime timers with it.
pub fn create(node: &Node, resource: &Arc<Resource>, record: Record) -> Result<Record, StoreError> {
    let (actor, record) = resource.insert(record, node.timers.now())?;
    actor.touch(node);
    Ok(record)
}

/// Creates the record, or updates the one that has the same `keys` (atomically, in its actor).
pub fn upsert(node: &Node, resource: &Arc<Resource>, upsert: Upsert, reply: ReplyTo) {
    // A record created by someone else between our lookup and our create is found on retry.
    for _ in 0..3 {
        match resource.find_by(&upsert.keys, &upsert.record) {
            Err(e) => return respond(node, reply, Outcome::Error(e)),
            Ok(Some(actor)) => {
                return actor.deliver(node, Envelope::Call(reply, Op::Upsert(Box::new(upsert))));
            }
            Ok(None) => match create(node, resource, upsert.record.clone()) {
                Ok(record) => {
                    return respond(node, reply, Outcome::Upserted(UpsertKind::Created, record));
                }
                Err(e @ (StoreError::AlreadyExists(_) | StoreError::IdentityConflict(..))) => {
                    if !matches!(resource.find_by(&upsert.keys, &upsert.record), Ok(Some(_))) {
                        return respond(node, reply, Outcome::Error(e));
                    }
                }
                Err(e) => return respond(node, reply, Outcome::Error(e)),
            },
        }
    }
    respond(
        node,
        reply,
        Outcome::Error(StoreError::BadRequest(
            "upsert raced with concurrent changes three times; try again".into(),
        )),
    )
}
