//! `subscribe`, `{subscribe, [Resource]}` and `unsubscribe`: the caller becomes (or stops
//! being) an expiry handler, of every resource or of those listed. The node monitors handlers.

use crate::protocol::args;
use crate::protocol::caller::Caller;
use crate::protocol::error::Result;
use crate::protocol::reply;
use crate::protocol::service::Service;
use crate::term::{Atom, Value};

/// A `subscribe`: `None` for every resource.
#[derive(Debug)]
pub struct Subscribe(pub Option<Vec<Atom>>);

impl Subscribe {
    /// Parses the arguments of `{subscribe, [Resource]}`.
    pub fn parse(args: &[Value]) -> Result<Subscribe> {
        args::arity("subscribe", args, &[1], "{subscribe, [Resource]}")?;
        Ok(Subscribe(Some(args::fields(
            &args[0],
            "the resources to subscribe to",
        )?)))
    }

    /// Serves it.
    pub fn execute(self, svc: &Service, from: Caller) {
        match self.0 {
            // Handling no resource is not handling: the same as unsubscribing.
            Some(resources) if resources.is_empty() => svc.records.unsubscribe_expiry(&from.pid),
            resources => svc.records.subscribe_expiry(from.pid, resources),
        }
        svc.reply(&from, &reply::ok());
    }
}

/// Serves `unsubscribe`.
pub fn unsubscribe(svc: &Service, from: Caller) {
    svc.records.unsubscribe_expiry(&from.pid);
    svc.reply(&from, &reply::ok());
}
