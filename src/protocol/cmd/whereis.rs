//! `{whereis, Resource, PK}`: the record's own pid (given on first request), which can be
//! called, monitored and linked to. Asking touches the record.

use crate::protocol::args::{self, ResourceRef};
use crate::protocol::caller::Caller;
use crate::protocol::direct::RecordProcess;
use crate::protocol::error::{Error, Result};
use crate::protocol::reply;
use crate::protocol::service::Service;
use crate::record::StoreError;
use crate::term::Value;

/// A `whereis`.
#[derive(Debug)]
pub struct Whereis {
    /// The resource (or a tenant's namespace of it).
    pub resource: ResourceRef,
    /// The primary key.
    pub pk: Value,
}

impl Whereis {
    /// Parses the arguments.
    pub fn parse(args: &[Value]) -> Result<Whereis> {
        args::arity("whereis", args, &[2], "{whereis, Resource, PK}")?;
        Ok(Whereis {
            resource: args::resource(&args[0])?,
            pk: args::pk(&args[1])?,
        })
    }

    /// Serves it.
    pub fn execute(self, svc: &Service, from: Caller) {
        let result = svc.find(&self.resource, &self.pk).and_then(|actor| {
            let pid = actor
                .pid(&*svc.records, |actor, pid| {
                    let pass_to = svc.pid_requests_to.clone();
                    RecordProcess::spawned(actor, pid, svc.records.clone(), pass_to)
                })
                .ok_or(Error::Store(StoreError::NotFound))?;
            actor.touch(&*svc.records);
            Ok(reply::ok_with(Value::Pid(Box::new(pid))))
        });
        svc.reply_result(&from, result);
    }
}
