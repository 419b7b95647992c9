//! `{destroy, Resource, PK}` and `{destroy, Resource, PK, #{filter => F}}`: removes the record
//! in its actor's turn, if the filter holds; its pid exits with `normal`.

use crate::protocol::args::{self, ResourceRef};
use crate::protocol::caller::Caller;
use crate::protocol::error::Result;
use crate::protocol::service::Service;
use crate::query::filter::Expr;
use crate::record::Op;
use crate::term::Value;

/// A `destroy`.
#[derive(Debug)]
pub struct Destroy {
    /// The resource (or a tenant's namespace of it).
    pub resource: ResourceRef,
    /// The primary key.
    pub pk: Value,
    /// The condition (`filter`).
    pub filter: Option<Expr>,
}

impl Destroy {
    /// Parses the arguments.
    pub fn parse(args: &[Value]) -> Result<Destroy> {
        args::arity(
            "destroy",
            args,
            &[2, 3],
            "{destroy, Resource, PK} or {destroy, Resource, PK, Opts}",
        )?;
        Ok(Destroy {
            resource: args::resource(&args[0])?,
            pk: args::pk(&args[1])?,
            filter: match args.get(2) {
                Some(o) => args::filter_opts(o, "destroy")?,
                None => None,
            },
        })
    }

    /// Serves it: the record's actor replies.
    pub fn execute(self, svc: &Service, from: Caller) {
        let op = Op::Destroy {
            filter: self.filter,
        };
        svc.to_record(from, &self.resource, &self.pk, op);
    }
}
