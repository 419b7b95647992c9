//! The state of the `ash_gen_server` process: the record service it owns and its options, with
//! the lookups every request starts with.

use super::args::ResourceRef;
use super::error::{Error, Result};
use super::reply::{self, ToCaller};
use crate::node::Node;
use crate::protocol::caller::Caller;
use crate::record::{Envelope, Op, Outcome, RecordActor, RecordService, Resource, StoreError};
use crate::term::Value;
use std::sync::Arc;

/// Options of the protocol server.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Serve the `fault` request (tests only).
    pub fault_injection: bool,
    /// Keep the records in this directory across restarts.
    pub data_dir: Option<std::path::PathBuf>,
    /// When the journal in `data_dir` is flushed to the disk.
    pub fsync: Option<crate::storage::FsyncPolicy>,
    /// Register under this name instead of [`super::SERVER_NAME`] (a cluster member's router
    /// has that name; its record service runs under another).
    pub register_as: Option<&'static str>,
    /// Record pids pass their calls and casts on to the process registered under this name, as
    /// the same requests by resource and key, instead of serving them in the record's actor (a
    /// cluster member's record service: its router sends writes through the log).
    pub pid_requests_to: Option<&'static str>,
}

/// What every request is served with.
pub struct Service {
    /// The records.
    pub records: Arc<RecordService>,
    /// The options.
    pub options: Options,
    /// Unique to this run of the server: a client seeing it change knows the node restarted
    /// (and lost its records and definitions).
    pub instance: uuid::Uuid,
    /// Where record pids pass their requests on: [`Options::pid_requests_to`] at start, or set
    /// once later ([`Service::pass_pid_requests_to`]) when a single node becomes a cluster
    /// member. Every record pid reads it for each request.
    pub pid_requests_to: PassTo,
}

/// The name record pids pass their requests on to, once set (see [`Service::pid_requests_to`]).
pub type PassTo = Arc<std::sync::OnceLock<&'static str>>;

impl Service {
    /// A service over `records` with `options`.
    pub fn new(records: Arc<RecordService>, options: Options) -> Service {
        let pid_requests_to = PassTo::default();
        if let Some(name) = options.pid_requests_to {
            let _ = pid_requests_to.set(name);
        }
        Service {
            records,
            options,
            instance: uuid::Uuid::new_v4(),
            pid_requests_to,
        }
    }

    /// From now on record pids, the ones already given out included, pass their requests on
    /// to the process registered as `name` instead of serving them. Returns false (and
    /// changes nothing) if they already pass them on.
    pub fn pass_pid_requests_to(&self, name: &'static str) -> bool {
        self.pid_requests_to.set(name).is_ok()
    }

    /// The node the server runs on.
    pub fn node(&self) -> &Arc<Node> {
        self.records.node()
    }

    /// The resource (or tenant namespace) `name` names.
    pub fn resource(&self, name: &ResourceRef) -> Result<Arc<Resource>> {
        Ok(self.records.store.get_in(name.name, name.tenant.as_ref())?)
    }

    /// The actor of the record of resource `name` with primary key `pk`.
    pub fn find(&self, name: &ResourceRef, pk: &Value) -> Result<Arc<RecordActor>> {
        let resource = self.resource(name)?;
        let key = resource.key_from_pk(pk)?;
        resource
            .lookup(&key)
            .ok_or(Error::Store(StoreError::NotFound))
    }

    /// Sends `op` to a record's actor, which replies to `from` when its turn is done.
    pub fn to_record(&self, from: Caller, name: &ResourceRef, pk: &Value, op: Op) {
        match self.find(name, pk) {
            Ok(actor) => {
                let op = op.bound(&actor.resource.config().types);
                actor.deliver(
                    &*self.records,
                    Envelope::Call(Some(Box::new(ToCaller(from))), op),
                )
            }
            Err(e) => self.reply(&from, &e.to_reply()),
        }
    }

    /// Replies `reply` to `from`.
    pub fn reply(&self, from: &Caller, reply: &Value) {
        from.reply(self.node(), reply);
    }

    /// Replies `{ok, Value}` or `{error, Reason}`.
    pub fn reply_result(&self, from: &Caller, result: Result<Value>) {
        match result {
            Ok(value) => self.reply(from, &value),
            Err(e) => self.reply(from, &e.to_reply()),
        }
    }

    /// Replies with an outcome.
    pub fn reply_outcome(&self, from: &Caller, outcome: &Outcome) {
        reply::send_outcome(&*self.records, from, outcome);
    }
}
