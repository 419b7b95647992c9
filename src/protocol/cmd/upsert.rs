//! `{upsert, Resource, Record, Opts}`: creates the record, or updates the one with the same
//! keys (the primary key or an identity) atomically in its actor.

use crate::protocol::args::{self, ResourceRef, key};
use crate::protocol::caller::Caller;
use crate::protocol::error::{Error, Result, bad};
use crate::protocol::reply::ToCaller;
use crate::protocol::service::Service;
use crate::query::expr::Atomics;
use crate::query::filter::Expr;
use crate::record::{Resource, StoreError, Upsert as UpsertArgs};
use crate::term::{Atom, Record, Value};

/// Options of an upsert as sent, before the resource's primary key is known.
#[derive(Debug, Clone, Default)]
pub struct UpsertOpts {
    /// `keys`; `None` for the primary key.
    pub keys: Option<Vec<Atom>>,
    /// `set`: an explicit map to merge into a matching record.
    pub set: Option<Record>,
    /// `fields`: which of the record's own fields to merge (`None` for all but the keys).
    pub fields: Option<Vec<Atom>>,
    /// `condition`.
    pub condition: Option<Expr>,
    /// `atomics`.
    pub atomics: Atomics,
}

impl UpsertOpts {
    /// Parses the options map; `bulk` also accepts `upsert => Bool` and `all_or_nothing => Bool`
    /// (bulk_create's switches).
    pub fn parse(v: &Value, bulk: bool) -> Result<UpsertOpts> {
        let mut out = UpsertOpts::default();
        for (k, val) in args::opts(v, "upsert")? {
            match key(k) {
                Some("keys") => out.keys = Some(args::fields(val, "keys")?),
                Some("set") => out.set = Some(args::record(val, "set")?),
                Some("fields") if matches!(val, Value::Atom(a) if a.as_str() == "all") => {
                    out.fields = None
                }
                Some("fields") => out.fields = Some(args::fields(val, "fields")?),
                Some("condition") if val.is_nil() => out.condition = None,
                Some("condition") => out.condition = Some(args::filter(val)?),
                Some("atomics") => out.atomics = args::atomics(val)?,
                Some("upsert" | "all_or_nothing") if bulk => {}
                _ => {
                    return bad(format!(
                        "unknown upsert option {k:?} (expected keys, set, fields, condition or atomics)"
                    ));
                }
            }
        }
        Ok(out)
    }

    /// The upsert of `record` into `resource` these options describe; a record it creates is
    /// born at `born_wall` (see [`Caller::born_wall`]).
    pub fn args(
        &self,
        resource: &Resource,
        record: Record,
        born_wall: Option<i64>,
    ) -> std::result::Result<UpsertArgs, StoreError> {
        let keys = self
            .keys
            .clone()
            .unwrap_or_else(|| resource.config().primary_key.clone());
        let set = match (&self.set, &self.fields) {
            (Some(set), _) => set.clone(),
            (None, Some(fields)) => record.select(fields),
            (None, None) => {
                // Everything but the keys, and never the primary key: an upsert on an identity
                // updates the record it finds, it does not move it to the new record's key.
                let primary_key = resource.config().primary_key.clone();
                let rest: Vec<Atom> = record
                    .iter()
                    .map(|(f, _)| f)
                    .filter(|f| !keys.contains(f) && !primary_key.contains(f))
                    .collect();
                record.select(&rest)
            }
        };
        Ok(UpsertArgs {
            record,
            keys,
            set,
            condition: self
                .condition
                .as_ref()
                .map(|c| c.bind(&resource.config().types)),
            atomics: self.atomics.clone(),
            born_wall,
        })
    }
}

/// An `upsert`.
#[derive(Debug)]
pub struct Upsert {
    /// The resource (or a tenant's namespace of it).
    pub resource: ResourceRef,
    /// The record.
    pub record: Record,
    /// The options.
    pub opts: UpsertOpts,
}

impl Upsert {
    /// Parses the arguments.
    pub fn parse(args: &[Value]) -> Result<Upsert> {
        args::arity("upsert", args, &[2, 3], "{upsert, Resource, Record, Opts}")?;
        Ok(Upsert {
            resource: args::resource(&args[0])?,
            record: args::record(&args[1], "record")?,
            opts: match args.get(2) {
                Some(o) => UpsertOpts::parse(o, false)?,
                None => UpsertOpts::default(),
            },
        })
    }

    /// Serves it: the record's actor (or the create) replies.
    pub fn execute(self, svc: &Service, from: Caller) {
        let born_wall = from.born_wall;
        let prepared = svc.resource(&self.resource).and_then(|r| {
            let args = self
                .opts
                .args(&r, self.record, born_wall)
                .map_err(Error::from)?;
            Ok((r, args))
        });
        match prepared {
            Ok((r, args)) => svc.records.upsert(&r, args, Some(Box::new(ToCaller(from)))),
            Err(e) => svc.reply(&from, &e.to_reply()),
        }
    }
}
