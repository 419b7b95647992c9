//! `{query, Resource, Query}`: filter during the scan, then sort, offset, limit and select; the
//! returned records are touched.

use crate::protocol::args::{self, ResourceRef};
use crate::protocol::caller::Caller;
use crate::protocol::error::{Error, Result};
use crate::protocol::reply;
use crate::protocol::service::Service;
use crate::query::{self as q};
use crate::record::{RecordService, Resource};
use crate::term::{Record, Value};
use std::sync::Arc;

/// A `query`.
#[derive(Debug)]
pub struct Query {
    /// The resource (or a tenant's namespace of it).
    pub resource: ResourceRef,
    /// The query.
    pub query: q::Query,
}

impl Query {
    /// Parses the arguments.
    pub fn parse(args: &[Value]) -> Result<Query> {
        args::arity("query", args, &[2], "{query, Resource, Query}")?;
        Ok(Query {
            resource: args::resource(&args[0])?,
            query: q::Query::parse(&args[1]).map_err(Error::BadRequest)?,
        })
    }

    /// Serves it.
    pub fn execute(self, svc: &Service, from: Caller) {
        match svc.resource(&self.resource) {
            Ok(r) => {
                let records = run(&svc.records, &r, &self.query);
                from.reply_with(svc.node(), true, |out| reply::encode_records(&records, out));
            }
            Err(e) => svc.reply(&from, &e.to_reply()),
        }
    }
}

/// Filter during the scan, then sort and page the matches; the returned records are touched.
fn run(records: &RecordService, resource: &Arc<Resource>, query: &q::Query) -> Vec<Record> {
    let config = resource.config();
    let query = &query.bind(&config.types);
    let matched = resource.select(query.filter.as_ref());
    let page = q::Query {
        filter: None,
        ..query.clone()
    };
    let mut result = q::run(matched, &page, &config.primary_key);
    if config.has_lifetimes() {
        for rec in &result {
            if let Some(actor) = resource.key_of(rec).ok().and_then(|k| resource.lookup(&k)) {
                actor.touch(records);
            }
        }
    }
    if let Some(select) = &query.select {
        result = result
            .into_iter()
            .map(|rec| q::project(&rec, select, &config.primary_key))
            .collect();
    }
    result
}
