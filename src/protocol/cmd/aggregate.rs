//! `{aggregate, Resource, Query, [Aggregate]}` and, per group,
//! `{aggregate, Resource, Query, [Aggregate], #{group_by => Field}}`: computed over the
//! query's page of records, on the spot.

use crate::protocol::args::{self, ResourceRef, key};
use crate::protocol::caller::Caller;
use crate::protocol::error::{Error, Result, bad};
use crate::protocol::reply;
use crate::protocol::service::Service;
use crate::query::{self as q, Aggregate as Spec};
use crate::term::{Atom, Value};

/// An `aggregate`.
#[derive(Debug)]
pub struct Aggregate {
    /// The resource (or a tenant's namespace of it).
    pub resource: ResourceRef,
    /// The query whose records are aggregated.
    pub query: q::Query,
    /// The aggregates.
    pub aggregates: Vec<Spec>,
    /// Compute per value of this field.
    pub group_by: Option<Atom>,
}

impl Aggregate {
    /// Parses the arguments.
    pub fn parse(args: &[Value]) -> Result<Aggregate> {
        args::arity(
            "aggregate",
            args,
            &[3, 4],
            "{aggregate, Resource, Query, [Aggregate]} or {aggregate, Resource, Query, [Aggregate], Opts}",
        )?;
        let mut group_by = None;
        if let Some(o) = args.get(3) {
            for (k, v) in args::opts(o, "aggregate")? {
                match (key(k), v) {
                    (Some("group_by"), _) if v.is_nil() => group_by = None,
                    (Some("group_by"), Value::Atom(f)) => group_by = Some(*f),
                    (Some("group_by"), other) => {
                        return bad(format!(
                            "group_by must be an atom naming a field, got: {other:?}"
                        ));
                    }
                    _ => {
                        return bad(format!(
                            "unknown aggregate option {k:?} (expected group_by)"
                        ));
                    }
                }
            }
        }
        Ok(Aggregate {
            resource: args::resource(&args[0])?,
            query: q::Query::parse(&args[1]).map_err(Error::BadRequest)?,
            aggregates: Spec::parse_list(&args[2]).map_err(Error::BadRequest)?,
            group_by,
        })
    }

    /// Serves it.
    pub fn execute(self, svc: &Service, from: Caller) {
        let result = svc.resource(&self.resource).and_then(|resource| {
            let config = resource.config();
            let query = self.query.bind(&config.types);
            let aggregates: Vec<Spec> = self
                .aggregates
                .iter()
                .map(|a| a.bind(&config.types))
                .collect();
            let matched = resource.select(query.filter.as_ref());
            let page = q::Query {
                filter: None,
                ..query
            };
            let pk = &config.primary_key;
            let values = match self.group_by {
                None => q::aggregate(matched, &page, &aggregates, pk),
                Some(field) => q::aggregate_grouped(
                    matched,
                    &page,
                    &aggregates,
                    pk,
                    field,
                    config.types.get(field),
                ),
            }?;
            Ok(reply::ok_with(values))
        });
        svc.reply_result(&from, result);
    }
}
