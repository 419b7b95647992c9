//! `{bulk_create, Resource, [Record], Opts}`: many creates (or upserts, with `upsert => true`)
//! in one request; the reply lists each record's result in order, once all are in. With
//! `all_or_nothing => true`, plain creates are one step: every record is created, or none and
//! the reply names the first record that could not be.

use crate::protocol::args::{self, ResourceRef, key};
use crate::protocol::caller::Caller;
use crate::protocol::error::{Error, Result};
use crate::protocol::gather::{Finish, Gather};
use crate::protocol::reply;
use crate::protocol::service::Service;
use crate::record::{Outcome, RecordService, Reply};
use crate::term::{Record, Value};

use super::upsert::UpsertOpts;

/// A `bulk_create`.
#[derive(Debug)]
pub struct BulkCreate {
    /// The resource (or a tenant's namespace of it).
    pub resource: ResourceRef,
    /// The records.
    pub records: Vec<Record>,
    /// Upsert options, when `upsert => true`.
    pub upsert: Option<UpsertOpts>,
    /// `all_or_nothing => true` (plain creates only): every record or none.
    pub all_or_nothing: bool,
}

impl BulkCreate {
    /// Parses the arguments: at most `max_records` records.
    pub fn parse(args: &[Value], max_records: usize) -> Result<BulkCreate> {
        args::arity(
            "bulk_create",
            args,
            &[2, 3],
            "{bulk_create, Resource, [Record], Opts}",
        )?;
        let list = args[1].as_list().ok_or_else(|| {
            Error::BadRequest(format!(
                "bulk_create needs a list of records, got: {:?}",
                args[1]
            ))
        })?;
        if list.len() > max_records {
            return Err(Error::BadRequest(format!(
                "bulk_create of {} records exceeds the limit of {max_records} records per request",
                list.len()
            )));
        }
        let records = list
            .iter()
            .enumerate()
            .map(|(i, r)| args::record(r, &format!("record {}", i + 1)))
            .collect::<Result<Vec<_>>>()?;
        let (mut upsert, mut all_or_nothing) = (None, false);
        if let Some(o) = args.get(2) {
            let switch = |name| {
                args::opts(o, "bulk_create").map(|opts| {
                    opts.iter()
                        .any(|(k, v)| key(k) == Some(name) && v.is_true())
                })
            };
            let (is_upsert, whole) = (switch("upsert")?, switch("all_or_nothing")?);
            let parsed = UpsertOpts::parse(o, true)?;
            if is_upsert && whole {
                return Err(Error::BadRequest(
                    "bulk_create: all_or_nothing applies to plain creates, not to upserts".into(),
                ));
            }
            upsert = is_upsert.then_some(parsed);
            all_or_nothing = whole;
        }
        Ok(BulkCreate {
            resource: args::resource(&args[0])?,
            records,
            upsert,
            all_or_nothing,
        })
    }

    /// Serves it.
    pub fn execute(self, svc: &Service, from: Caller) {
        let resource = match svc.resource(&self.resource) {
            Ok(r) => r,
            Err(e) => return svc.reply(&from, &e.to_reply()),
        };
        if self.records.is_empty() {
            return svc.reply(&from, &reply::ok_list(Vec::new()));
        }
        if self.all_or_nothing {
            let answer = match svc
                .records
                .create_all(&resource, self.records, from.born_wall)
            {
                Ok(created) => reply::ok_list(
                    created
                        .iter()
                        .map(|r| reply::ok_with(r.to_value()))
                        .collect(),
                ),
                // `{error, {record, N, Reason}}`: N from 1, Reason as `create` gives it.
                Err((i, e)) => Error::Store(e).to_reply_about_record(i + 1),
            };
            return svc.reply(&from, &answer);
        }
        let finish: Finish = Box::new(|outcomes: Vec<Outcome>| {
            reply::ok_list(outcomes.iter().map(reply::render).collect())
        });
        let born_wall = from.born_wall;
        let gather = Gather::new(from, self.records.len(), finish);
        let records: &RecordService = &svc.records;
        for (i, rec) in self.records.into_iter().enumerate() {
            let slot = gather.slot(i);
            match &self.upsert {
                None => {
                    let outcome = records
                        .create_at(&resource, rec, born_wall)
                        .map_or_else(Outcome::Error, Outcome::Record);
                    slot.send(records, outcome)
                }
                Some(opts) => match opts.args(&resource, rec, born_wall) {
                    Ok(args) => records.upsert(&resource, args, Some(slot)),
                    Err(e) => slot.send(records, Outcome::Error(e)),
                },
            }
        }
    }
}
