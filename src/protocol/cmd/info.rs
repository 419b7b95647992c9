//! `{info, Resource}`: a resource's settings and record count.

use crate::protocol::args::{self, ResourceRef};
use crate::protocol::caller::Caller;
use crate::protocol::error::Result;
use crate::protocol::reply::{self, atom};
use crate::protocol::service::Service;
use crate::record::Resource;
use crate::term::{Atom, Value};

/// An `info`.
#[derive(Debug)]
pub struct Info {
    /// The resource (or a tenant's namespace of it).
    pub resource: ResourceRef,
}

impl Info {
    /// Parses the arguments.
    pub fn parse(args: &[Value]) -> Result<Info> {
        args::arity("info", args, &[1], "{info, Resource}")?;
        Ok(Info {
            resource: args::resource(&args[0])?,
        })
    }

    /// Serves it.
    pub fn execute(self, svc: &Service, from: Caller) {
        let result = svc
            .resource(&self.resource)
            .map(|r| reply::ok_with(info(&r)));
        svc.reply_result(&from, result);
    }
}

fn info(resource: &Resource) -> Value {
    let config = resource.config();
    let ms = |v: Option<u64>| match v {
        Some(n) => Value::Int(n as i64),
        None => atom("infinity"),
    };
    let atoms = |fields: &[Atom]| Value::list(fields.iter().map(|f| Value::Atom(*f)).collect());
    Value::map(vec![
        (atom("primary_key"), atoms(&config.primary_key)),
        (atom("count"), Value::Int(resource.len() as i64)),
        (atom("inactivity_timeout"), ms(config.inactivity_timeout)),
        (atom("maximum_lifetime"), ms(config.maximum_lifetime)),
        (
            atom("identities"),
            Value::list(
                config
                    .identities
                    .iter()
                    .map(|id| Value::pair(id.name.clone(), atoms(&id.fields)))
                    .collect(),
            ),
        ),
        (
            atom("max_restarts"),
            Value::Int(config.restart.max_restarts as i64),
        ),
        (
            atom("max_seconds"),
            Value::Int(config.restart.max_seconds as i64),
        ),
        (atom("expiry_grace"), Value::Int(config.expiry_grace as i64)),
    ])
}
