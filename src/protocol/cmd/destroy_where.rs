//! `{destroy_where, Resource, Query, #{return}}`: destroys every record the query matches, each
//! in its own actor's turn with the query's filter checked again there; their pids exit
//! `normal`.

use super::update_where::{Return, fan_out, matching};
use crate::protocol::args::{self, ResourceRef, key};
use crate::protocol::caller::Caller;
use crate::protocol::error::{Error, Result, bad};
use crate::protocol::service::Service;
use crate::query::{self as q};
use crate::record::Op;
use crate::term::Value;

/// A `destroy_where`.
#[derive(Debug)]
pub struct DestroyWhere {
    /// The resource (or a tenant's namespace of it).
    pub resource: ResourceRef,
    /// Which records.
    pub query: q::Query,
    /// `return`.
    pub ret: Return,
}

impl DestroyWhere {
    /// Parses the arguments.
    pub fn parse(args: &[Value]) -> Result<DestroyWhere> {
        args::arity(
            "destroy_where",
            args,
            &[2, 3],
            "{destroy_where, Resource, Query} or {destroy_where, Resource, Query, #{return => records | count}}",
        )?;
        let mut ret = Return::Records;
        if let Some(o) = args.get(2) {
            for (k, v) in args::opts(o, "destroy_where")? {
                match key(k) {
                    Some("return") => ret = Return::parse(v)?,
                    _ => {
                        return bad(format!(
                            "unknown destroy_where option {k:?} (expected return)"
                        ));
                    }
                }
            }
        }
        Ok(DestroyWhere {
            resource: args::resource(&args[0])?,
            query: q::Query::parse(&args[1]).map_err(Error::BadRequest)?,
            ret,
        })
    }

    /// Serves it.
    pub fn execute(self, svc: &Service, from: Caller) {
        match svc.resource(&self.resource) {
            Ok(r) => {
                let m = matching(&r, &self.query);
                let filter = m.query.filter.clone();
                fan_out(svc, from, m.records, self.ret, |_| Op::Destroy {
                    filter: filter.clone(),
                });
            }
            Err(e) => svc.reply(&from, &e.to_reply()),
        }
    }
}
