//! `{clear, Resource}`: removes every record of a resource; their pids exit with
//! `{shutdown, cleared}`. Answers how many there were.

use crate::protocol::args::{self, ResourceRef};
use crate::protocol::caller::Caller;
use crate::protocol::error::Result;
use crate::protocol::reply::{self, atom};
use crate::protocol::service::Service;
use crate::term::{Value, atoms};

/// A `clear`.
#[derive(Debug)]
pub struct Clear {
    /// The resource (or a tenant's namespace of it).
    pub resource: ResourceRef,
}

impl Clear {
    /// Parses the arguments.
    pub fn parse(args: &[Value]) -> Result<Clear> {
        args::arity("clear", args, &[1], "{clear, Resource}")?;
        Ok(Clear {
            resource: args::resource(&args[0])?,
        })
    }

    /// Serves it.
    pub fn execute(self, svc: &Service, from: Caller) {
        let result = svc.resource(&self.resource).map(|r| {
            // A resource without tenant clears every tenant too.
            let mut namespaces = vec![r];
            if self.resource.tenant.is_none() {
                namespaces.extend(svc.records.store.tenants_of(self.resource.name));
            }
            let reason = Value::pair(Value::Atom(*atoms::SHUTDOWN), atom("cleared"));
            let n = svc.records.stop_all(namespaces, &reason);
            reply::ok_with(Value::Int(n as i64))
        });
        svc.reply_result(&from, result);
    }
}
