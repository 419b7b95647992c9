//! Routing of incoming distribution operations to local processes.
//!
//! Sends go to the protocol server, `net_kernel` or a record actor; monitor, link and exit
//! signals go to the process table; spawn requests are refused (this node runs no Erlang code).
//! A message for a process that does not exist is dropped, as the BEAM drops it.

use super::Node;
use super::connection::Conn;
use super::genserver::{self, GenMessage};
use super::process::{SERVER_NAME, Target};
use crate::term::{Atom, Pid, Value};
use crate::wire::dist::{Control, ProcRef};
use std::sync::Arc;

/// Handles one operation from `conn`.
pub fn dispatch(node: &Arc<Node>, conn: &Arc<Conn>, control: Control) {
    match control {
        Control::RegSend { from, to, message } => to_name(node, to, from, message),
        Control::Send { from, to, message } => to_pid(node, &to, from, message),
        Control::AliasSend { .. } => {
            tracing::debug!(peer = %conn.peer, "dropped a message to an alias (this node makes none)");
        }
        Control::Monitor {
            from,
            to,
            reference,
        } => node.processes.monitor(node, from, to, reference),
        Control::Demonitor { to, reference, .. } => node.processes.demonitor(&to, &reference),
        Control::MonitorExit {
            from, reference, ..
        } => {
            if let ProcRef::Pid(watched) = from {
                node.expiry.handler_down(node, &watched, &reference);
            }
        }
        Control::Link { from, to } => node.processes.link(node, from, to),
        Control::Unlink { id, from, to } => {
            node.processes.unlink(&to, &from);
            if let Some(id) = id {
                conn.write(|w| w.unlink_ack(&id, &to, &from));
            }
        }
        Control::Exit {
            from,
            to,
            reason,
            link,
        } => exit_signal(node, from, &to, reason, link),
        Control::SpawnRequest { req_id, from } => {
            conn.write(|w| w.spawn_refused(&req_id, &from, Atom::from_static("notsup")));
        }
        Control::UnlinkAck | Control::Ignored(_) => {}
    }
}

/// A message nested too deeply to serve: a caller gets an error instead of a timeout.
pub fn too_deep(node: &Arc<Node>, conn: &Arc<Conn>, control: Control) {
    let message = match control {
        Control::RegSend { message, .. } | Control::Send { message, .. } => message,
        _ => {
            tracing::warn!(peer = %conn.peer, "dropped a control message nested too deeply");
            return;
        }
    };
    match genserver::classify(message) {
        GenMessage::Call(from, _) => {
            let reason = crate::protocol::reply::bad_request(&format!(
                "the request nests deeper than {} levels",
                crate::wire::etf::MAX_DEPTH
            ));
            node.reply(&from, &crate::protocol::reply::error(reason));
        }
        _ => tracing::warn!(peer = %conn.peer, "dropped a message nested too deeply"),
    }
}

fn to_name(node: &Arc<Node>, name: Atom, sender: Pid, message: Value) {
    match name.as_str() {
        SERVER_NAME => crate::protocol::server::handle(node, message),
        "net_kernel" => net_kernel(node, message),
        _ => {
            tracing::debug!(%name, from = %sender, "dropped a message to an unregistered name");
        }
    }
}

fn to_pid(node: &Arc<Node>, pid: &Pid, sender: Option<Pid>, message: Value) {
    match node.processes.resolve(pid) {
        Some(Target::Server) => crate::protocol::server::handle(node, message),
        Some(Target::NetKernel) => net_kernel(node, message),
        Some(Target::Record(actor)) => {
            crate::protocol::server::handle_record(node, &actor, message)
        }
        None => tracing::debug!(%pid, from = ?sender, "dropped a message to a dead process"),
    }
}

/// `net_kernel` answers `is_auth` so `net_adm:ping/1` reports `pong`.
fn net_kernel(node: &Arc<Node>, message: Value) {
    if let GenMessage::Call(from, _request) = genserver::classify(message) {
        node.reply(&from, &Value::Atom(Atom::from_static("yes")));
    }
}

/// An exit signal: along a link (the partner died) or from `exit/2`.
fn exit_signal(node: &Arc<Node>, from: Pid, to: &Pid, reason: Value, link: bool) {
    // A link signal for a link that no longer exists is stale: ignore it, as the BEAM does.
    if link && !node.processes.unlink(to, &from) {
        return;
    }
    if let Some(Target::Record(actor)) = node.processes.resolve(to) {
        actor.exit_signal(node, from, reason, link);
    }
}
