//! `{query, Resource, Query}`: filter during the scan, then sort, offset, limit and select; and
//! `{query, Resource, Query, #{partition_by => Field, partitions => [{Key, [Value]}]}}`: the
//! same within each partition of the matches. The returned records are touched, unless the
//! options say `touch => false` (what a sharded cluster's fan-out asks its shards for).

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
    /// Partitions, each sorted and paged on its own; `None` for the plain query.
    pub partition: Option<q::Partition>,
    /// Whether the returned records' inactivity timers are reset (`touch => false`: not).
    pub touch: bool,
}

impl Query {
    /// Parses the arguments.
    pub fn parse(args: &[Value]) -> Result<Query> {
        args::arity(
            "query",
            args,
            &[2, 3],
            "{query, Resource, Query} or {query, Resource, Query, Opts}",
        )?;
        let mut touch = true;
        let partition = match args.get(2) {
            Some(opts) => {
                let mut rest = Vec::new();
                for (k, v) in args::opts(opts, "query")? {
                    match (args::key(k), v.as_atom().map(|a| a.as_str())) {
                        (Some("touch"), Some("true")) => touch = true,
                        (Some("touch"), Some("false")) => touch = false,
                        (Some("touch"), _) => {
                            return Err(Error::BadRequest(format!(
                                "touch must be true or false, got: {v:?}"
                            )));
                        }
                        _ => rest.push((k.clone(), v.clone())),
                    }
                }
                q::Partition::parse(&rest).map_err(Error::BadRequest)?
            }
            None => None,
        };
        Ok(Query {
            resource: args::resource(&args[0])?,
            query: q::Query::parse(&args[1]).map_err(Error::BadRequest)?,
            partition,
            touch,
        })
    }

    /// Serves it.
    pub fn execute(self, svc: &Service, from: Caller) {
        let resource = match svc.resource(&self.resource) {
            Ok(r) => r,
            Err(e) => return svc.reply(&from, &e.to_reply()),
        };
        match &self.partition {
            None => {
                let records = run(&svc.records, &resource, &self.query, self.touch);
                from.reply_with(svc.node(), true, |w| reply::encode_records(&records, w));
            }
            Some(partition) => {
                let max = svc.node().config.limits.max_records_per_request;
                let touch = self.touch;
                match run_partitioned(&svc.records, &resource, &self.query, partition, max, touch) {
                    Ok(partitions) => from.reply_with(svc.node(), true, |w| {
                        reply::encode_partitions(&partitions, w)
                    }),
                    Err(e) => svc.reply(&from, &Error::BadRequest(e).to_reply()),
                }
            }
        }
    }
}

/// Filter during the scan, then sort and page the matches; the returned records are touched
/// when `touch`.
fn run(
    records: &RecordService,
    resource: &Arc<Resource>,
    query: &q::Query,
    touch: bool,
) -> Vec<Record> {
    let config = resource.config();
    let query = &query.bind(&config.types);
    let matched = resource.select(query.filter.as_ref());
    let page = q::Query {
        filter: None,
        ..query.clone()
    };
    let result = q::run(matched, &page, &config.primary_key);
    finish(records, resource, query, result, touch)
}

/// Filter during the scan, then split the matches into partitions and sort and page each; the
/// returned records are touched when `touch`. Partitions returning more than the records matched and more
/// than `max_records` in all are refused.
fn run_partitioned(
    records: &RecordService,
    resource: &Arc<Resource>,
    query: &q::Query,
    partition: &q::Partition,
    max_records: usize,
    touch: bool,
) -> std::result::Result<Vec<(Value, Vec<Record>)>, String> {
    let config = resource.config();
    let query = &query.bind(&config.types);
    let matched = resource.select(query.filter.as_ref());
    let page = q::Query {
        filter: None,
        ..query.clone()
    };
    let ty = config.types.get(partition.field);
    let partitions = q::run_partitioned(
        matched,
        &page,
        partition,
        &config.primary_key,
        ty,
        max_records,
    )?;
    Ok(partitions
        .into_iter()
        .map(|(key, result)| (key, finish(records, resource, query, result, touch)))
        .collect())
}

/// Touches the records returned (when `touch`) and keeps only the `select`ed fields.
fn finish(
    records: &RecordService,
    resource: &Arc<Resource>,
    query: &q::Query,
    mut result: Vec<Record>,
    touch: bool,
) -> Vec<Record> {
    let config = resource.config();
    if touch && config.has_lifetimes() {
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
