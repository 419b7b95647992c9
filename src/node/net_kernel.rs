//! `net_kernel`: the one registered process every node has. It answers `is_auth` calls, so
//! `net_adm:ping/1` reports `pong`.

use super::Node;
use super::genserver::{self, GenMessage};
use super::process::Process;
use crate::term::{Atom, Pid, Value};
use std::sync::Arc;

struct NetKernel;

impl Process for NetKernel {
    fn deliver(&self, node: &Arc<Node>, _from: Option<Pid>, message: Value) {
        if let GenMessage::Call(from, _request) = genserver::classify(message) {
            node.reply(&from, &Value::Atom(Atom::from_static("yes")));
        }
    }
}

/// Registers `net_kernel` on `node`.
pub(super) fn register(node: &Node) {
    node.register("net_kernel", |_| Arc::new(NetKernel));
}
