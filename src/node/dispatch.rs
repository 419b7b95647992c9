//! Routing of incoming distribution messages to local processes.
//!
//! Sends go to the protocol server, `net_kernel` or a record actor; monitor, link and exit
//! signals go to the process table; spawn requests are refused (this node runs no Erlang code).
//! A message for a process that does not exist is dropped, as the BEAM drops it.

use super::Node;
use super::connection::Conn;
use super::genserver::{self, GenMessage};
use super::process::{SERVER_NAME, Target};
use crate::term::{Value, atoms, from_term};
use eetf::{Pid, Term};
use erl_dist::message::Message;
use erl_dist::term::PidOrAtom;
use std::sync::Arc;

/// Handles one message from `conn`.
pub fn dispatch(node: &Arc<Node>, conn: &Arc<Conn>, message: Message) {
    match message {
        Message::RegSend(m) => to_name(node, &m.to_name.name, Some(m.from_pid), m.message),
        Message::RegSendTt(m) => to_name(node, &m.to_name.name, Some(m.from_pid), m.message),
        Message::Send(m) => to_pid(node, &m.to_pid, None, m.message),
        Message::SendTt(m) => to_pid(node, &m.to_pid, None, m.message),
        Message::SendSender(m) => to_pid(node, &m.to_pid, Some(m.from_pid), m.message),
        Message::SendSenderTt(m) => to_pid(node, &m.to_pid, Some(m.from_pid), m.message),
        Message::MonitorP(m) => node
            .processes
            .monitor(node, m.from_pid, m.to_proc, m.reference),
        Message::DemonitorP(m) => node.processes.demonitor(&m.to_proc, &m.reference),
        Message::MonitorPExit(m) => {
            monitor_fired(node, m.from_proc, m.to_pid, m.reference, m.reason)
        }
        Message::PayloadMonitorPExit(m) => {
            monitor_fired(node, m.from_proc, m.to_pid, m.reference, m.reason)
        }
        Message::Link(m) => node.processes.link(node, m.from_pid, m.to_pid),
        Message::Unlink(m) => {
            node.processes.unlink(&m.to_pid, &m.from_pid);
        }
        Message::UnlinkId(m) => {
            node.processes.unlink(&m.to_pid, &m.from_pid);
            conn.send(Message::unlink_id_ack(m.id, m.to_pid, m.from_pid));
        }
        Message::Exit(m) => link_exit(node, m.from_pid, &m.to_pid, m.reason),
        Message::ExitTt(m) => link_exit(node, m.from_pid, &m.to_pid, m.reason),
        Message::PayloadExit(m) => link_exit(node, m.from_pid, &m.to_pid, m.reason),
        Message::PayloadExitTt(m) => link_exit(node, m.from_pid, &m.to_pid, m.reason),
        Message::Exit2(m) => exit_signal(node, m.from_pid, &m.to_pid, m.reason),
        Message::Exit2Tt(m) => exit_signal(node, m.from_pid, &m.to_pid, m.reason),
        Message::PayloadExit2(m) => exit_signal(node, m.from_pid, &m.to_pid, m.reason),
        Message::PayloadExit2Tt(m) => exit_signal(node, m.from_pid, &m.to_pid, m.reason),
        Message::SpawnRequest(m) => refuse_spawn(conn, m.req_id, m.from_pid),
        Message::SpawnRequestTt(m) => refuse_spawn(conn, m.req_id, m.from_pid),
        Message::AliasSend(_) | Message::AliasSendTt(_) => {
            tracing::debug!(peer = %conn.peer, "dropped a message to an alias (this node makes none)");
        }
        Message::UnlinkIdAck(_)
        | Message::NodeLink(_)
        | Message::GroupLeader(_)
        | Message::SpawnReply(_)
        | Message::SpawnReplyTt(_)
        | Message::Tick => {}
    }
}

fn to_name(node: &Arc<Node>, name: &str, sender: Option<Pid>, message: Term) {
    match name {
        SERVER_NAME => crate::protocol::server::handle(node, message),
        "net_kernel" => net_kernel(node, message),
        _ => {
            tracing::debug!(name, from = ?sender, "dropped a message to an unregistered name");
        }
    }
}

fn to_pid(node: &Arc<Node>, pid: &Pid, sender: Option<Pid>, message: Term) {
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
fn net_kernel(node: &Arc<Node>, message: Term) {
    if let GenMessage::Call(from, _request) = genserver::classify(message) {
        node.reply(&from, &Value::Atom(crate::term::Atom::from_static("yes")));
    }
}

/// A link partner died: the local end of the link gets the exit signal.
fn link_exit(node: &Arc<Node>, from: Pid, to: &Pid, reason: Term) {
    if !node.processes.unlink(to, &from) {
        return;
    }
    if let Some(Target::Record(actor)) = node.processes.resolve(to) {
        actor.exit_signal(node, from, reason_value(reason), true);
    }
}

/// `exit(Pid, Reason)` from a remote process.
fn exit_signal(node: &Arc<Node>, from: Pid, to: &Pid, reason: Term) {
    if let Some(Target::Record(actor)) = node.processes.resolve(to) {
        actor.exit_signal(node, from, reason_value(reason), false);
    }
}

fn reason_value(reason: Term) -> Value {
    from_term(reason).unwrap_or(Value::Atom(*atoms::KILLED))
}

/// One of our own monitors (on an expiry handler) fired.
fn monitor_fired(
    node: &Arc<Node>,
    from: PidOrAtom,
    to: Pid,
    reference: eetf::Reference,
    _reason: Term,
) {
    if let PidOrAtom::Pid(watched) = from {
        node.expiry.handler_down(node, &watched, &reference);
    }
    let _ = to;
}

fn refuse_spawn(conn: &Conn, req_id: eetf::Reference, from: Pid) {
    conn.send(Message::spawn_reply(
        req_id,
        from,
        eetf::FixInteger { value: 0 },
        PidOrAtom::Atom(eetf::Atom::from("notsup")),
    ));
}
