//! `resources`: the names of the defined resources.

use crate::protocol::caller::Caller;
use crate::protocol::reply;
use crate::protocol::service::Service;
use crate::term::Value;

/// Serves `resources`.
pub fn execute(svc: &Service, from: Caller) {
    let names = svc.records.store.names();
    svc.reply(
        &from,
        &reply::ok_list(names.into_iter().map(Value::Atom).collect()),
    );
}
