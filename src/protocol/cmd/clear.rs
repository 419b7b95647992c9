//! `{clear, Resource}`: removes every record of a resource; their pids exit with
//! `{shutdown, cleared}`. Answers how many there were.

use crate::node::genserver::From;
use crate::protocol::args;
use crate::protocol::error::Result;
use crate::protocol::reply::{self, atom};
use crate::protocol::service::Service;
use crate::record::Envelope;
use crate::term::{Atom, Value, atoms};

/// A `clear`.
#[derive(Debug)]
pub struct Clear {
    /// The resource.
    pub resource: Atom,
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
    pub fn execute(self, svc: &Service, from: From) {
        let result = svc.resource(self.resource).map(|r| {
            let actors = r.take_all();
            let n = actors.len();
            let reason = Value::pair(Value::Atom(*atoms::SHUTDOWN), atom("cleared"));
            for actor in actors {
                actor.deliver(&svc.records, Envelope::Stop(reason.clone()));
            }
            reply::ok_with(Value::Int(n as i64))
        });
        svc.reply_result(&from, result);
    }
}
