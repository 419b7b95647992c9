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
//! - `become_member` (from a node that joins this one): a single node ([`Role::joinable`])
//!   becomes a member of a new cluster holding its records ([`super::convert`]) and answers
//!   `{role, member}` once the joining node can be admitted; otherwise (it could not, or is
//!   not a single node) the answer is what `ping` answers.
//!
//! A node that gets `{role, deciding, true}` from a peer becomes a member too: the nodes
//! started together with `--join` lists naming each other then form one cluster, as with
//! `--cluster` (the name that sorts first forms it; see [`super::membership`]). A BEAM node has
//! no such process (`noproc`): the asking node is a single node connected to it.

use crate::node::genserver::{self, GenMessage};
use crate::node::{Node, Process};
use crate::term::{Atom, Pid, Value};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

/// Makes this single node a member; resolves to whether it became one.
pub type Become = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = bool> + Send>> + Send>;

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
    become_member: parking_lot::Mutex<Option<Become>>,
    became: tokio::sync::OnceCell<bool>,
}

impl Role {
    /// Registers the role process on `node`, deciding; `joins`: whether the node has `--join`
    /// peers. `None` when the name is taken.
    pub fn register(node: &Arc<Node>, joins: bool) -> Option<Arc<Role>> {
        let role = Arc::new(Role::new(joins));
        let process = RoleProcess { role: role.clone() };
        node.register(ROLE_NAME, |_| Arc::new(process))?;
        Some(role)
    }

    fn new(joins: bool) -> Role {
        Role {
            state: AtomicU8::new(DECIDING),
            joins,
            become_member: parking_lot::Mutex::new(None),
            became: tokio::sync::OnceCell::new(),
        }
    }

    /// A single node that becomes a member with `become_member` when a node joining it asks.
    pub fn joinable(&self, become_member: Become) {
        *self.become_member.lock() = Some(become_member);
    }

    /// Becomes a member if this is a joinable single node (once, however many ask); the
    /// answer to give after.
    async fn join_asked(&self) -> Value {
        if self.state.load(Ordering::Acquire) == SINGLE {
            let became = self
                .became
                .get_or_init(|| async {
                    let hook = self.become_member.lock().take();
                    match hook {
                        Some(become_member) => become_member().await,
                        None => false,
                    }
                })
                .await;
            if *became {
                self.decided(true);
            }
        }
        self.answer()
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
        let GenMessage::Call(from, request) = genserver::classify(message) else {
            return;
        };
        if request.as_atom().map(|a| a.as_str()) == Some(BECOME_MEMBER) {
            let (role, node) = (self.role.clone(), node.clone());
            tokio::spawn(async move {
                let answer = role.join_asked().await;
                node.reply_now(&from, &answer);
            });
        } else {
            node.reply_now(&from, &self.role.answer());
        }
    }
}

/// The request asking a single node to become a member (a node joining it).
pub const BECOME_MEMBER: &str = "become_member";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_read_back() {
        let role = Role::new(true);
        assert_eq!(PeerRole::of(&role.answer()), Some(PeerRole::Deciding(true)));
        role.decided(true);
        assert_eq!(PeerRole::of(&role.answer()), Some(PeerRole::Member));
        role.decided(false);
        assert_eq!(PeerRole::of(&role.answer()), Some(PeerRole::Single));
        assert_eq!(PeerRole::of(&Value::Atom(Atom::from_static("pong"))), None);
    }

    #[tokio::test]
    async fn a_single_node_becomes_a_member_once_and_only_if_joinable() {
        let role = Role::new(false);
        role.decided(false);
        // No way to become a member was given: it stays single.
        assert_eq!(
            PeerRole::of(&role.join_asked().await),
            Some(PeerRole::Single)
        );

        let role = Arc::new(Role::new(false));
        role.decided(false);
        let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = runs.clone();
        role.joinable(Box::new(move || {
            Box::pin(async move {
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                true
            })
        }));
        let (a, b) = tokio::join!(role.join_asked(), role.join_asked());
        assert_eq!(PeerRole::of(&a), Some(PeerRole::Member));
        assert_eq!(PeerRole::of(&b), Some(PeerRole::Member));
        assert_eq!(runs.load(Ordering::SeqCst), 1);

        // A conversion that fails leaves it single.
        let role = Role::new(false);
        role.decided(false);
        role.joinable(Box::new(|| Box::pin(async { false })));
        assert_eq!(
            PeerRole::of(&role.join_asked().await),
            Some(PeerRole::Single)
        );
    }
}
