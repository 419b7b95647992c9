//! `{update_where, Resource, Query, #{set, atomics, return}}`: updates every record the query
//! matches, each in its own actor's turn with the query's filter checked again there; the
//! atomics are first tried on every matching record as scanned, so an expression that fails
//! changes nothing.

use crate::protocol::args::{self, ResourceRef, key};
use crate::protocol::caller::Caller;
use crate::protocol::error::{Error, Result, bad};
use crate::protocol::gather::{Finish, Gather};
use crate::protocol::reply;
use crate::protocol::service::Service;
use crate::query::expr::{Atomics, Scope, eval_atomics};
use crate::query::{self as q};
use crate::record::{Envelope, Op, Outcome, RecordActor, Resource, StoreError};
use crate::term::{Record, Value};
use std::sync::Arc;

/// What a by-query request answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Return {
    /// `records`: the records changed.
    Records,
    /// `count`: how many.
    Count,
}

impl Return {
    /// Parses `records` or `count`.
    pub fn parse(v: &Value) -> Result<Return> {
        match v.as_atom().map(|a| a.as_str()) {
            Some("records") => Ok(Return::Records),
            Some("count") => Ok(Return::Count),
            _ => bad(format!("return must be records or count, got: {v:?}")),
        }
    }

    /// The reply for the outcomes of the records' turns: the changed records in order (or
    /// their number); records that no longer matched (`stale`) or were gone are left out; the
    /// first other error is the reply.
    pub fn finish(self) -> Finish {
        Box::new(move |outcomes: Vec<Outcome>| {
            let mut records = Vec::with_capacity(outcomes.len());
            for outcome in outcomes {
                match outcome {
                    Outcome::Record(r) | Outcome::Destroyed(r) => records.push(r),
                    Outcome::Error(StoreError::Stale | StoreError::NotFound) => {}
                    Outcome::Error(e) => return Error::Store(e).to_reply(),
                    Outcome::Ok | Outcome::Upserted(..) => {}
                }
            }
            match self {
                Return::Records => reply::ok_list(records.iter().map(Record::to_value).collect()),
                Return::Count => reply::ok_with(Value::Int(records.len() as i64)),
            }
        })
    }
}

/// An `update_where`.
#[derive(Debug)]
pub struct UpdateWhere {
    /// The resource (or a tenant's namespace of it).
    pub resource: ResourceRef,
    /// Which records, in which order.
    pub query: q::Query,
    /// `set`: what to merge.
    pub set: Record,
    /// `atomics`: value expressions merged after `set`.
    pub atomics: Atomics,
    /// `return`.
    pub ret: Return,
}

impl UpdateWhere {
    /// Parses the arguments.
    pub fn parse(args: &[Value]) -> Result<UpdateWhere> {
        args::arity(
            "update_where",
            args,
            &[3],
            "{update_where, Resource, Query, #{set => Changes, atomics => [{Field, VExpr}], return => records | count}}",
        )?;
        let mut out = UpdateWhere {
            resource: args::resource(&args[0])?,
            query: q::Query::parse(&args[1]).map_err(Error::BadRequest)?,
            set: args::record(&Value::map(Vec::new()), "set")?,
            atomics: Vec::new(),
            ret: Return::Records,
        };
        for (k, v) in args::opts(&args[2], "update_where")? {
            match key(k) {
                Some("set") => out.set = args::record(v, "set")?,
                Some("atomics") => out.atomics = args::atomics(v)?,
                Some("return") => out.ret = Return::parse(v)?,
                _ => {
                    return bad(format!(
                        "unknown update_where option {k:?} (expected set, atomics or return)"
                    ));
                }
            }
        }
        Ok(out)
    }

    /// Serves it.
    pub fn execute(self, svc: &Service, from: Caller) {
        let matched = match svc.resource(&self.resource) {
            Ok(r) => matching(&r, &self.query),
            Err(e) => return svc.reply(&from, &e.to_reply()),
        };
        let Matching {
            resource,
            query,
            records,
        } = matched;
        if !self.atomics.is_empty() {
            let config = resource.config();
            for (record, _) in &records {
                let scope = Scope {
                    record,
                    incoming: None,
                    types: &config.types,
                };
                if let Err(e) = eval_atomics(&self.atomics, scope) {
                    return svc.reply(&from, &Error::Store(StoreError::Expr(e.0)).to_reply());
                }
            }
        }
        fan_out(svc, from, records, self.ret, |_| Op::Update {
            changes: self.set.clone(),
            filter: query.filter.clone(),
            atomics: self.atomics.clone(),
        });
    }
}

/// The records a by-query request works on, in the query's order, with their actors.
pub struct Matching {
    /// The resource.
    pub resource: Arc<Resource>,
    /// The query, bound to the resource's types.
    pub query: q::Query,
    /// The records as scanned, with their actors.
    pub records: Vec<(Record, Arc<RecordActor>)>,
}

/// Scans `resource` with `query` (filter, sort, offset, limit).
pub fn matching(resource: &Arc<Resource>, query: &q::Query) -> Matching {
    let config = resource.config();
    let query = query.bind(&config.types);
    let scanned = resource.select(query.filter.as_ref());
    let page = q::Query {
        filter: None,
        ..query.clone()
    };
    let records = q::run(scanned, &page, &config.primary_key)
        .into_iter()
        .filter_map(|record| {
            let actor = resource
                .key_of(&record)
                .ok()
                .and_then(|k| resource.lookup(&k))?;
            Some((record, actor))
        })
        .collect();
    Matching {
        resource: resource.clone(),
        query,
        records,
    }
}

/// Sends `op(record)` to each record's actor and answers once all have answered.
pub fn fan_out(
    svc: &Service,
    from: Caller,
    records: Vec<(Record, Arc<RecordActor>)>,
    ret: Return,
    op: impl Fn(&Record) -> Op,
) {
    if records.is_empty() {
        return svc.reply(&from, &(ret.finish())(Vec::new()));
    }
    let gather = Gather::new(from, records.len(), ret.finish());
    for (i, (record, actor)) in records.iter().enumerate() {
        let envelope = Envelope::Call(Some(gather.slot(i)), op(record));
        actor.deliver(&*svc.records, envelope);
    }
}
