//! Local processes: their pids, and the monitors and links remote processes hold on them.
//!
//! Two processes live as long as the node: `ash_gen_server` (the protocol server) and
//! `net_kernel`. Every other local process is a record actor, which gets a pid the first time
//! one is asked for. Monitors and links are kept here, outside the actors, so a record nobody
//! watches costs nothing for them. When a local process exits, [`ProcessTable::exit`] sends
//! `'DOWN'` to its monitors and exit signals to its links; when a peer disconnects,
//! [`ProcessTable::node_down`] forgets its monitors and breaks its links, as the BEAM does.

use super::Node;
use crate::record::RecordActor;
use crate::term::{Atom, Pid, Ref, Value, atoms};
use crate::wire::dist::ProcRef;
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Pid number of the `ash_gen_server` process.
pub const SERVER_PID: u64 = 1;
/// Pid number of the `net_kernel` process.
pub const NET_KERNEL_PID: u64 = 2;
const FIRST_DYNAMIC_PID: u64 = 1000;
const ID_BITS: u32 = 28;

/// The registered name of the protocol server.
pub const SERVER_NAME: &str = "ash_gen_server";

/// A local process a message can be delivered to.
pub enum Target {
    /// The protocol server.
    Server,
    /// `net_kernel`.
    NetKernel,
    /// A record actor.
    Record(Arc<RecordActor>),
}

#[derive(Clone)]
struct Watcher {
    pid: Pid,
    reference: Ref,
}

/// Pids, monitors and links of this node's processes.
pub struct ProcessTable {
    node: Atom,
    creation: u32,
    next: AtomicU64,
    records: RwLock<HashMap<u64, Arc<RecordActor>>>,
    monitors: Mutex<HashMap<u64, Vec<Watcher>>>,
    links: Mutex<HashMap<u64, Vec<Pid>>>,
}

impl ProcessTable {
    /// An empty table for the node `node` of incarnation `creation`.
    pub fn new(node: Atom, creation: u32) -> ProcessTable {
        ProcessTable {
            node,
            creation,
            next: AtomicU64::new(FIRST_DYNAMIC_PID),
            records: RwLock::new(HashMap::new()),
            monitors: Mutex::new(HashMap::new()),
            links: Mutex::new(HashMap::new()),
        }
    }

    /// The pid of local pid number `n`.
    pub fn pid(&self, n: u64) -> Pid {
        Pid {
            node: self.node,
            id: (n & ((1 << ID_BITS) - 1)) as u32,
            serial: (n >> ID_BITS) as u32,
            creation: self.creation,
        }
    }

    /// The local pid number of `pid`, if it names a process of this node incarnation.
    pub fn number(&self, pid: &Pid) -> Option<u64> {
        if pid.node != self.node || pid.creation != self.creation || pid.id >= (1 << ID_BITS) {
            return None;
        }
        Some(((pid.serial as u64) << ID_BITS) | pid.id as u64)
    }

    /// Whether `name` is a process registered on this node.
    pub fn is_registered(name: &str) -> bool {
        name == SERVER_NAME || name == "net_kernel"
    }

    /// The process `pid` names, if it is alive.
    pub fn resolve(&self, pid: &Pid) -> Option<Target> {
        match self.number(pid)? {
            SERVER_PID => Some(Target::Server),
            NET_KERNEL_PID => Some(Target::NetKernel),
            n => self.records.read().get(&n).cloned().map(Target::Record),
        }
    }

    /// Gives a record actor a new pid number.
    pub fn spawn(&self, actor: Arc<RecordActor>) -> u64 {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.records.write().insert(n, actor);
        n
    }

    /// Number of record processes that have a pid.
    pub fn count(&self) -> usize {
        self.records.read().len()
    }

    /// A remote process starts monitoring a local one.
    pub fn monitor(&self, node: &Node, watcher: Pid, target: ProcRef, reference: Ref) {
        let n = match &target {
            ProcRef::Name(name) if Self::is_registered(name.as_str()) => return,
            ProcRef::Name(_) => None,
            ProcRef::Pid(pid) => match self.number(pid) {
                Some(SERVER_PID | NET_KERNEL_PID) => return,
                Some(n) if self.records.read().contains_key(&n) => Some(n),
                _ => None,
            },
        };
        if let Some(n) = n {
            let mut monitors = self.monitors.lock();
            // Checked again under the lock that `exit` takes, so no 'DOWN' is missed.
            if self.records.read().contains_key(&n) {
                monitors.entry(n).or_default().push(Watcher {
                    pid: watcher,
                    reference,
                });
                return;
            }
        }
        let noproc = Value::Atom(*atoms::NOPROC);
        node.write_to(watcher.node, |w| {
            w.monitor_exit(&target, &watcher, &reference, &noproc)
        });
    }

    /// A remote process stops monitoring.
    pub fn demonitor(&self, target: &ProcRef, reference: &Ref) {
        let ProcRef::Pid(pid) = target else { return };
        let Some(n) = self.number(pid) else { return };
        let mut monitors = self.monitors.lock();
        if let Some(list) = monitors.get_mut(&n) {
            list.retain(|w| &w.reference != reference);
            if list.is_empty() {
                monitors.remove(&n);
            }
        }
    }

    /// A remote process links to a local one.
    pub fn link(&self, node: &Node, from: Pid, to: Pid) {
        let Some(n) = self.number(&to) else {
            return self.refuse_link(node, from, to);
        };
        if n == SERVER_PID || n == NET_KERNEL_PID {
            return;
        }
        let mut links = self.links.lock();
        if self.records.read().contains_key(&n) {
            let list = links.entry(n).or_default();
            if !list.contains(&from) {
                list.push(from);
            }
            return;
        }
        drop(links);
        self.refuse_link(node, from, to);
    }

    fn refuse_link(&self, node: &Node, from: Pid, to: Pid) {
        let noproc = Value::Atom(*atoms::NOPROC);
        node.write_to(from.node, |w| w.exit(&to, &from, &noproc));
    }

    /// Removes a link (either side asked).
    pub fn unlink(&self, local: &Pid, remote: &Pid) -> bool {
        let Some(n) = self.number(local) else {
            return false;
        };
        let mut links = self.links.lock();
        let Some(list) = links.get_mut(&n) else {
            return false;
        };
        let before = list.len();
        list.retain(|p| p != remote);
        let removed = list.len() != before;
        if list.is_empty() {
            links.remove(&n);
        }
        removed
    }

    /// Local process `n` has exited with `reason`: tell its monitors and links.
    pub fn exit(&self, node: &Node, n: u64, reason: &Value) {
        let watchers = {
            let mut monitors = self.monitors.lock();
            self.records.write().remove(&n);
            monitors.remove(&n).unwrap_or_default()
        };
        let linked = self.links.lock().remove(&n).unwrap_or_default();
        if watchers.is_empty() && linked.is_empty() {
            return;
        }
        let me = self.pid(n);
        let from = ProcRef::Pid(me);
        for w in watchers {
            node.write_to(w.pid.node, |out| {
                out.monitor_exit(&from, &w.pid, &w.reference, reason)
            });
        }
        for pid in linked {
            node.write_to(pid.node, |w| w.exit(&me, &pid, reason));
        }
    }

    /// `peer` disconnected: forget its monitors and links.
    ///
    /// Unlike a BEAM process, a record is not killed with `noconnection` when a linked peer
    /// goes away: losing a client's connection is not the record failing, and a record must
    /// never be lost to a network event. Only an exit signal a live process actually sends (it
    /// exited, or called `exit/2`) reaches a record.
    pub fn node_down(&self, peer: &str) {
        let from_peer = |pid: &Pid| pid.node.as_str() == peer;
        self.monitors.lock().retain(|_, list| {
            list.retain(|w| !from_peer(&w.pid));
            !list.is_empty()
        });
        self.links.lock().retain(|_, list| {
            list.retain(|p| !from_peer(p));
            !list.is_empty()
        });
    }

    /// The node name atom.
    pub fn node_atom(&self) -> Atom {
        self.node
    }
}
