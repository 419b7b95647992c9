//! Routing of incoming distribution operations to local processes.
//!
//! Messages go to the process a pid or registered name stands for; monitor, link and exit
//! signals go through the process table to the processes concerned; spawn requests are refused
//! (this node runs no Erlang code). A message for a process that does not exist is dropped, as
//! the BEAM drops it. Nothing here knows what any process does.

use super::Node;
use crate::term::{Atom, Pid, Value};
use crate::wire::dist::{Control, ProcRef};
use std::sync::Arc;

/// Handles one operation that arrived from `peer`.
pub fn dispatch(node: &Arc<Node>, peer: &str, control: Control) {
    match control {
        Control::RegSend { from, to, message } => match node.processes.resolve_name(to) {
            Some(process) => process.deliver(node, Some(from), message),
            None => tracing::debug!(name = %to, %from, "dropped a message to an unregistered name"),
        },
        Control::Send { from, to, message } => match node.processes.resolve(&to) {
            Some(process) => process.deliver(node, from, message),
            None => tracing::debug!(%to, ?from, "dropped a message to a dead process"),
        },
        Control::AliasSend { .. } => {
            tracing::debug!(peer = %peer, "dropped a message to an alias (this node makes none)");
        }
        Control::Monitor {
            from,
            to,
            reference,
        } => node.monitored_by(from, to, reference),
        Control::Demonitor { to, reference, .. } => {
            let pid = match to {
                ProcRef::Pid(pid) => Some(pid),
                ProcRef::Name(name) => node.processes.whereis(name),
            };
            if let Some(pid) = pid {
                node.processes.remove_monitor(&pid, &reference);
            }
        }
        Control::MonitorExit {
            reference, reason, ..
        } => {
            if let Some((watcher, target)) = node.processes.unwatch(&reference)
                && let Some(process) = node.processes.resolve(&watcher)
            {
                process.down(node, reference, target, reason);
            }
        }
        Control::Link { from, to } => node.linked_by(from, to),
        Control::Unlink { id, from, to } => {
            node.processes.unlink(&to, &from);
            if let Some(id) = id {
                node.write_to(from.node, |w| w.unlink_ack(&id, &to, &from));
            }
        }
        Control::Exit {
            from,
            to,
            reason,
            link,
        } => exit_signal(node, from, &to, reason, link),
        Control::SpawnRequest { req_id, from } => {
            node.write_to(from.node, |w| {
                w.spawn_refused(&req_id, &from, Atom::from_static("notsup"))
            });
        }
        Control::UnlinkAck | Control::Ignored(_) => {}
    }
}

/// A message over one of the node's limits (`reason`), decoded with the offending parts cut
/// off: its process decides what to do with what could be decoded (a server answers a call with
/// an error instead of letting it time out).
pub fn over_limit(node: &Arc<Node>, peer: &str, control: Control, reason: &'static str) {
    let (process, message) = match control {
        Control::RegSend { to, message, .. } => (node.processes.resolve_name(to), message),
        Control::Send { to, message, .. } => (node.processes.resolve(&to), message),
        _ => {
            tracing::warn!(peer = %peer, reason, "dropped a control message over a limit");
            return;
        }
    };
    match process {
        Some(process) => process.over_limit(node, message, reason),
        None => tracing::warn!(peer = %peer, reason, "dropped a message over a limit"),
    }
}

/// An exit signal: along a link (the partner died) or from `exit/2`.
fn exit_signal(node: &Arc<Node>, from: Pid, to: &Pid, reason: Value, link: bool) {
    // A link signal for a link that no longer exists is stale: ignore it, as the BEAM does.
    if link && !node.processes.unlink(to, &from) {
        return;
    }
    if let Some(process) = node.processes.resolve(to) {
        process.exit_signal(node, from, reason, link);
    }
}
