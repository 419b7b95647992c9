//! `cluster` on a node that is not a cluster member (started without `--cluster`): a cluster
//! of one. A member's router answers it itself (see `crate::cluster::membership::info`).

use crate::protocol::caller::Caller;
use crate::protocol::reply;
use crate::protocol::service::Service;
use crate::term::{Atom, Value};

/// Serves `cluster`.
pub fn execute(svc: &Service, from: Caller) {
    let me = Value::Atom(svc.node().name_atom);
    let atom = |name: &'static str| Value::Atom(Atom::from_static(name));
    let info = Value::map(vec![
        (atom("members"), Value::list(vec![me.clone()])),
        (atom("voters"), Value::list(vec![me.clone()])),
        (atom("leader"), me.clone()),
        (atom("healthy"), Value::boolean(true)),
        (atom("admitting"), Value::boolean(true)),
        (atom("replicas"), Value::Int(1)),
        (atom("shards"), Value::Int(1)),
        (atom("self"), me),
    ]);
    svc.reply(&from, &reply::ok_with(info));
}
