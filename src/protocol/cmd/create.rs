//! `{create, Resource, Record}`: a new record and its actor, served on the spot.

use crate::protocol::args::{self, ResourceRef};
use crate::protocol::caller::Caller;
use crate::protocol::error::Result;
use crate::protocol::service::Service;
use crate::record::Outcome;
use crate::term::{Record, Value};

/// A `create`.
#[derive(Debug)]
pub struct Create {
    /// The resource (or a tenant's namespace of it).
    pub resource: ResourceRef,
    /// The record.
    pub record: Record,
}

impl Create {
    /// Parses the arguments.
    pub fn parse(args: &[Value]) -> Result<Create> {
        args::arity("create", args, &[2], "{create, Resource, Record}")?;
        Ok(Create {
            resource: args::resource(&args[0])?,
            record: args::record(&args[1], "record")?,
        })
    }

    /// Serves it.
    pub fn execute(self, svc: &Service, from: Caller) {
        match svc.resource(&self.resource) {
            Ok(r) => {
                let outcome = svc
                    .records
                    .create_at(&r, self.record, from.born_wall)
                    .map_or_else(Outcome::Error, Outcome::Record);
                svc.reply_outcome(&from, &outcome);
            }
            Err(e) => svc.reply(&from, &e.to_reply()),
        }
    }
}
