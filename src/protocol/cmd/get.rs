//! `{get, Resource, PK}`: the record, read in its actor's turn (which touches it).

use crate::protocol::args::{self, ResourceRef};
use crate::protocol::caller::Caller;
use crate::protocol::error::Result;
use crate::protocol::service::Service;
use crate::record::Op;
use crate::term::Value;

/// A `get`.
#[derive(Debug)]
pub struct Get {
    /// The resource (or a tenant's namespace of it).
    pub resource: ResourceRef,
    /// The primary key.
    pub pk: Value,
}

impl Get {
    /// Parses the arguments.
    pub fn parse(args: &[Value]) -> Result<Get> {
        args::arity("get", args, &[2], "{get, Resource, PK}")?;
        Ok(Get {
            resource: args::resource(&args[0])?,
            pk: args::pk(&args[1])?,
        })
    }

    /// Serves it: the record's actor replies.
    pub fn execute(self, svc: &Service, from: Caller) {
        svc.to_record(from, &self.resource, &self.pk, Op::Get);
    }
}
