//! What a Rust node is to the cluster, for nodes that ask at start: the process registered as
//! [`ROLE_NAME`], from the moment the node is up.
//!
//! A node started with `--join` and neither `--cluster` nor `--replicas` joins its peers'
//! cluster when a peer is a member, and is a single node otherwise
//! ([`super::membership::runs_cluster`]). A member's endpoint answers that at once; this process
//! answers the rest, including for a node that is still deciding (all nodes started together,
//! naming each other with `--join` and no flag):
//!
//! - `ping` → `{role, deciding, Joins}` while the node decides (`Joins`: whether it has
//!   `--join` peers, so it may become a member), then `{role, member}` or `{role, single}`.
//!
//! A node that gets `{role, deciding, true}` from a peer becomes a member too: the nodes
//! started together with `--join` lists naming each other then form one cluster, as with
//! `--cluster` (the name that sorts first forms it; see [`super::membership`]). A BEAM node has
//! no such process (`noproc`): the asking node is a single node connected to it.

use crate::node::genserver::{self, GenMessage};
use crate::node::{Node, Process};
use crate::term::{Atom, Pid, Value};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

/// The role process's registered name.
pub const ROLE_NAME: &str = "ash_gen_server_role";

const DECIDING: u8 = 0;
const MEMBER: u8 = 1;
const SINGLE: u8 = 2;

/// What a peer's role process answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerRole {
    /// Still deciding; `true` when it has `--join` peers (it may become a member).
    Deciding(bool),
    /// A cluster member.
    Member,
    /// A single node.
    Single,
}

impl PeerRole {
    /// Reads an answer of the role process; `None` for anything else.
    pub fn of(answer: &Value) -> Option<PeerRole> {
        let items = answer.as_tuple()?;
        let tag = |i: usize| items.get(i)?.as_atom().map(|a| a.as_str());
        if tag(0)? != "role" {
            return None;
        }
        match (tag(1)?, items.len()) {
            ("deciding", 3) => Some(PeerRole::Deciding(tag(2)? == "true")),
            ("member", 2) => Some(PeerRole::Member),
            ("single", 2) => Some(PeerRole::Single),
            _ => None,
        }
    }
}

/// This node's role, as its role process answers it.
pub struct Role {
    state: AtomicU8,
    joins: bool,
}

impl Role {
    /// Registers the role process on `node`, deciding; `joins`: whether the node has `--join`
    /// peers. `None` when the name is taken.
    pub fn register(node: &Arc<Node>, joins: bool) -> Option<Arc<Role>> {
        let role = Arc::new(Role {
            state: AtomicU8::new(DECIDING),
            joins,
        });
        let process = RoleProcess { role: role.clone() };
        node.register(ROLE_NAME, |_| Arc::new(process))?;
        Some(role)
    }

    /// The node decided: a member, or a single node.
    pub fn decided(&self, member: bool) {
        let state = if member { MEMBER } else { SINGLE };
        self.state.store(state, Ordering::Release);
    }

    fn answer(&self) -> Value {
        let atom = |name: &'static str| Value::Atom(Atom::from_static(name));
        match self.state.load(Ordering::Acquire) {
            MEMBER => Value::pair(atom("role"), atom("member")),
            SINGLE => Value::pair(atom("role"), atom("single")),
            _ => Value::tuple(vec![
                atom("role"),
                atom("deciding"),
                Value::boolean(self.joins),
            ]),
        }
    }
}

struct RoleProcess {
    role: Arc<Role>,
}

impl Process for RoleProcess {
    fn deliver(&self, node: &Arc<Node>, _from: Option<Pid>, message: Value) {
        if let GenMessage::Call(from, _) = genserver::classify(message) {
            node.reply_now(&from, &self.role.answer());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_read_back() {
        let role = Role {
            state: AtomicU8::new(DECIDING),
            joins: true,
        };
        assert_eq!(PeerRole::of(&role.answer()), Some(PeerRole::Deciding(true)));
        role.decided(true);
        assert_eq!(PeerRole::of(&role.answer()), Some(PeerRole::Member));
        role.decided(false);
        assert_eq!(PeerRole::of(&role.answer()), Some(PeerRole::Single));
        assert_eq!(PeerRole::of(&Value::Atom(Atom::from_static("pong"))), None);
    }
}
