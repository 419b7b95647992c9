//! `{keep_alive, Resource, PK}`, as a call or a cast: resets the record's inactivity timer.

use crate::protocol::args::{self, ResourceRef};
use crate::protocol::caller::Caller;
use crate::protocol::error::Result;
use crate::protocol::service::Service;
use crate::record::{Envelope, Op};
use crate::term::Value;

/// A `keep_alive`.
#[derive(Debug)]
pub struct KeepAlive {
    /// The resource (or a tenant's namespace of it).
    pub resource: ResourceRef,
    /// The primary key.
    pub pk: Value,
}

impl KeepAlive {
    /// Parses the arguments.
    pub fn parse(args: &[Value]) -> Result<KeepAlive> {
        args::arity("keep_alive", args, &[2], "{keep_alive, Resource, PK}")?;
        Ok(KeepAlive {
            resource: args::resource(&args[0])?,
            pk: args::pk(&args[1])?,
        })
    }

    /// Serves the call: the record's actor replies `ok`.
    pub fn execute(self, svc: &Service, from: Caller) {
        svc.to_record(from, &self.resource, &self.pk, Op::KeepAlive);
    }

    /// Serves the cast: nobody waits, a missing record is ignored.
    pub fn cast(self, svc: &Service) {
        if let Ok(actor) = svc.find(&self.resource, &self.pk) {
            actor.deliver(&*svc.records, Envelope::Call(None, Op::KeepAlive));
        }
    }
}
