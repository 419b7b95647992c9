//! `{fault, Resource, PK, panic | error | {after_change, Changes}}`: makes the record's actor
//! fail in its turn, so tests can watch supervision work — `after_change` after putting
//! `Changes` in the store, half-way through an update. Served only by nodes started with
//! `--enable-fault-injection`.

use crate::protocol::args::{self, ResourceRef};
use crate::protocol::caller::Caller;
use crate::protocol::error::{Error, Result, bad};
use crate::protocol::service::Service;
use crate::record::{Fault as Kind, Op};
use crate::term::Value;

/// A `fault`.
#[derive(Debug)]
pub struct Fault {
    /// The resource (or a tenant's namespace of it).
    pub resource: ResourceRef,
    /// The primary key.
    pub pk: Value,
    /// How to fail.
    pub kind: Kind,
}

impl Fault {
    /// Parses the arguments.
    pub fn parse(args: &[Value]) -> Result<Fault> {
        args::arity(
            "fault",
            args,
            &[3],
            "{fault, Resource, PK, panic | error | {after_change, Changes}}",
        )?;
        let kind = match (&args[2], args[2].as_atom().map(|a| a.as_str())) {
            (_, Some("panic")) => Kind::Panic,
            (_, Some("error")) => Kind::Error,
            (Value::Tuple(t), _)
                if t.len() == 2 && t[0].as_atom().map(|a| a.as_str()) == Some("after_change") =>
            {
                Kind::AfterChange(args::record(&t[1], "changes")?)
            }
            _ => {
                return bad(format!(
                    "a fault is panic or error (or {{after_change, Changes}}), got: {:?}",
                    args[2]
                ));
            }
        };
        Ok(Fault {
            resource: args::resource(&args[0])?,
            pk: args::pk(&args[1])?,
            kind,
        })
    }

    /// Serves it: the record's actor fails and replies `{error, {record_crashed, Reason}}`.
    pub fn execute(self, svc: &Service, from: Caller) {
        if !svc.options.fault_injection {
            return svc.reply(&from, &Error::FaultInjectionDisabled.to_reply());
        }
        svc.to_record(from, &self.resource, &self.pk, Op::Fault(self.kind));
    }
}
