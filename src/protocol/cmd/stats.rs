//! `stats`: counts of what the node holds, for operators and tests.

use crate::protocol::caller::Caller;
use crate::protocol::reply::{self, atom};
use crate::protocol::service::Service;
use crate::term::Value;

/// Serves `stats`.
pub fn execute(svc: &Service, from: Caller) {
    let records = &svc.records;
    let node = svc.node();
    let int = |n: usize| Value::Int(n as i64);
    let (processes, monitors, remote_monitors, links) = node.processes.sizes();
    let stats = Value::map(vec![
        (atom("records"), int(records.store.total_records())),
        (atom("resources"), int(records.store.names().len())),
        (atom("connections"), int(node.peers().len())),
        (atom("processes"), int(processes)),
        (atom("monitors"), int(monitors)),
        (atom("remote_monitors"), int(remote_monitors)),
        (atom("links"), int(links)),
        (atom("pending_replies"), int(records.queued())),
        (
            atom("peers"),
            Value::list(
                node.peers()
                    .iter()
                    .filter_map(|p| crate::term::Atom::new(p).ok().map(Value::Atom))
                    .collect(),
            ),
        ),
        (atom("record_pids"), int(records.pids())),
        (atom("pending_timers"), int(records.timers.pending())),
        (atom("expiry_handlers"), int(records.expiry.count())),
        (
            atom("uptime_ms"),
            Value::Int(records.timers.uptime() as i64),
        ),
        (
            atom("instance_id"),
            Value::from(svc.instance.hyphenated().to_string().as_str()),
        ),
        (
            atom("rss_bytes"),
            crate::node::rss_bytes().map_or_else(|| atom("undefined"), int),
        ),
    ]);
    svc.reply(&from, &reply::ok_with(stats));
}
