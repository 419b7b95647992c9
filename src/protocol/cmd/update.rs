//! `{update, Resource, PK, Changes}` and `{update, Resource, PK, Changes, #{filter => F}}`:
//! merges the changes in the record's actor, if the filter holds for the record as it is then.

use crate::protocol::args::{self, ResourceRef};
use crate::protocol::caller::Caller;
use crate::protocol::error::Result;
use crate::protocol::service::Service;
use crate::query::expr::Atomics;
use crate::query::filter::Expr;
use crate::record::Op;
use crate::term::{Record, Value};

/// An `update`.
#[derive(Debug)]
pub struct Update {
    /// The resource (or a tenant's namespace of it).
    pub resource: ResourceRef,
    /// The primary key.
    pub pk: Value,
    /// What to merge.
    pub changes: Record,
    /// The condition (`filter`).
    pub filter: Option<Expr>,
    /// Value expressions merged after the changes (`atomics`).
    pub atomics: Atomics,
}

impl Update {
    /// Parses the arguments.
    pub fn parse(args: &[Value]) -> Result<Update> {
        args::arity(
            "update",
            args,
            &[3, 4],
            "{update, Resource, PK, Changes} or {update, Resource, PK, Changes, Opts}",
        )?;
        let (filter, atomics) = match args.get(3) {
            Some(o) => args::update_opts(o, "update")?,
            None => (None, Vec::new()),
        };
        Ok(Update {
            resource: args::resource(&args[0])?,
            pk: args::pk(&args[1])?,
            changes: args::record(&args[2], "changes")?,
            filter,
            atomics,
        })
    }

    /// Serves it: the record's actor replies.
    pub fn execute(self, svc: &Service, from: Caller) {
        let op = Op::Update {
            changes: self.changes,
            filter: self.filter,
            atomics: self.atomics,
        };
        svc.to_record(from, &self.resource, &self.pk, op);
    }
}
