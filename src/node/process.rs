//! Local processes: the [`Process`] behaviour, the table of live processes with their pids and
//! registered names, and the monitors and links that tie them to other processes.
//!
//! The node knows nothing of what its processes do: anything that implements [`Process`] can be
//! registered under a name or spawned with a fresh pid, and the node delivers to it what arrives
//! for that pid — messages, exit signals, and `'DOWN'` for the monitors it holds. When a local
//! process exits, [`ProcessTable::exit`] tells its monitors and links; when a peer disconnects,
//! [`ProcessTable::node_down`] forgets that peer's monitors and links on local processes and
//! reports `noconnection` to local processes that monitored the peer's processes, as the BEAM
//! does.

use crate::term::{Atom, Pid, Ref, Value};
use parking_lot::{Mutex, RwLock};
use rustc_hash::FxHashMap;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::Node;

/// A process of this node: what a pid on this node stands for.
///
/// Every method runs on the task that delivers (a connection's reader, a timer, another
/// process): implementations queue or handle the signal quickly and must not block.
pub trait Process: Send + Sync + 'static {
    /// A message arrived for this process (`from` is the sender when the peer said).
    fn deliver(&self, node: &Arc<Node>, from: Option<Pid>, message: Value);

    /// A message arrived that exceeds one of the node's limits (it nests too deeply, or holds
    /// a list or bignum too large); `message` is what could be decoded, with the offending parts
    /// cut off, and `reason` says which limit. By default it is dropped.
    fn over_limit(&self, _node: &Arc<Node>, _message: Value, reason: &'static str) {
        tracing::warn!(reason, "dropped a message over a limit");
    }

    /// An exit signal: `from` exited with `reason` and was linked (`link`), or called
    /// `exit(Pid, Reason)`. By default it is ignored, as by a process trapping exits.
    fn exit_signal(&self, _node: &Arc<Node>, _from: Pid, _reason: Value, _link: bool) {}

    /// A monitor this process holds fired: `{'DOWN', Reference, process, Target, Reason}`.
    fn down(&self, _node: &Arc<Node>, _reference: Ref, _target: Pid, _reason: Value) {}
}

/// Pid number 0: the node itself, as the sender of what no process sends (spawn refusals,
/// replies to aliases).
pub const NODE_PID: u64 = 0;
const FIRST_PID: u64 = 1;
const ID_BITS: u32 = 28;

/// Someone watching a local process.
#[derive(Clone)]
struct Watcher {
    pid: Pid,
    reference: Ref,
    /// The name the watcher monitored the process by, if it did by name.
    name: Option<Atom>,
}

/// Pids, names, monitors and links of this node's processes.
pub struct ProcessTable {
    node: Atom,
    creation: u32,
    next: AtomicU64,
    live: RwLock<FxHashMap<u64, Arc<dyn Process>>>,
    names: RwLock<FxHashMap<Atom, u64>>,
    /// Monitors on local processes, by the watched process's number.
    monitors: Mutex<FxHashMap<u64, Vec<Watcher>>>,
    /// Monitors local processes hold on remote ones: reference → (watcher number, target).
    watching: Mutex<HashMap<Ref, (u64, Pid)>>,
    /// Links of local processes, by the local process's number.
    links: Mutex<FxHashMap<u64, Vec<Pid>>>,
}

/// What [`ProcessTable::exit`] found to tell about an exited process.
#[derive(Default)]
pub struct Exited {
    /// The monitors that fire: `(watcher, reference, the name it monitored by)`.
    pub watchers: Vec<(Pid, Ref, Option<Atom>)>,
    /// The linked processes.
    pub linked: Vec<Pid>,
}

impl ProcessTable {
    /// An empty table for the node `node` of incarnation `creation`.
    pub fn new(node: Atom, creation: u32) -> ProcessTable {
        ProcessTable {
            node,
            creation,
            next: AtomicU64::new(FIRST_PID),
            live: RwLock::new(FxHashMap::default()),
            names: RwLock::new(FxHashMap::default()),
            monitors: Mutex::new(FxHashMap::default()),
            watching: Mutex::new(HashMap::new()),
            links: Mutex::new(FxHashMap::default()),
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

    /// Whether `pid` belongs to this node (any incarnation).
    pub fn is_local(&self, pid: &Pid) -> bool {
        pid.node == self.node
    }

    /// Gives `process` a new pid. `make` gets the pid before the process is reachable.
    pub fn spawn(&self, make: impl FnOnce(Pid) -> Arc<dyn Process>) -> Pid {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let pid = self.pid(n);
        let process = make(pid);
        self.live.write().insert(n, process);
        pid
    }

    /// Spawns `make`'s process under the registered name `name`; `None` if the name is taken.
    pub fn register(&self, name: Atom, make: impl FnOnce(Pid) -> Arc<dyn Process>) -> Option<Pid> {
        let mut names = self.names.write();
        if names.contains_key(&name) {
            return None;
        }
        let pid = self.spawn(make);
        names.insert(name, self.number(&pid).expect("a pid of this node"));
        Some(pid)
    }

    /// Spawns `make`'s process under the registered name `name`, which the process holding it
    /// gives up for the name `moved_to`, in one step: a message sent to `name` finds either
    /// process, never none. `None` (nothing changed) if `moved_to` is taken. When no process
    /// holds `name`, this is [`ProcessTable::register`].
    pub fn register_over(
        &self,
        name: Atom,
        moved_to: Atom,
        make: impl FnOnce(Pid) -> Arc<dyn Process>,
    ) -> Option<Pid> {
        let mut names = self.names.write();
        if names.contains_key(&moved_to) {
            return None;
        }
        if let Some(held) = names.remove(&name) {
            names.insert(moved_to, held);
        }
        let pid = self.spawn(make);
        names.insert(name, self.number(&pid).expect("a pid of this node"));
        Some(pid)
    }

    /// The pid registered under `name`.
    pub fn whereis(&self, name: Atom) -> Option<Pid> {
        self.names.read().get(&name).map(|&n| self.pid(n))
    }

    /// The process `pid` names, if it is alive.
    pub fn resolve(&self, pid: &Pid) -> Option<Arc<dyn Process>> {
        let n = self.number(pid)?;
        self.live.read().get(&n).cloned()
    }

    /// The process registered under `name`.
    pub fn resolve_name(&self, name: Atom) -> Option<Arc<dyn Process>> {
        let n = *self.names.read().get(&name)?;
        self.live.read().get(&n).cloned()
    }

    /// Number of live processes.
    pub fn count(&self) -> usize {
        self.live.read().len()
    }

    fn alive(&self, n: u64) -> bool {
        self.live.read().contains_key(&n)
    }

    /// `watcher` starts monitoring the local process `target` (by `name`, if it named it) under
    /// `reference`. Returns false (and records nothing) when the target is not alive: the
    /// caller reports `noproc`.
    pub fn add_monitor(
        &self,
        watcher: Pid,
        target: &Pid,
        reference: Ref,
        name: Option<Atom>,
    ) -> bool {
        let Some(n) = self.number(target) else {
            return false;
        };
        let mut monitors = self.monitors.lock();
        // Checked under the lock that `exit` takes, so no 'DOWN' is missed.
        if !self.alive(n) {
            return false;
        }
        monitors.entry(n).or_default().push(Watcher {
            pid: watcher,
            reference,
            name,
        });
        true
    }

    /// Removes the monitor `reference` on the local process `target`.
    pub fn remove_monitor(&self, target: &Pid, reference: &Ref) {
        let Some(n) = self.number(target) else { return };
        let mut monitors = self.monitors.lock();
        if let Some(list) = monitors.get_mut(&n) {
            list.retain(|w| &w.reference != reference);
            if list.is_empty() {
                monitors.remove(&n);
            }
        }
    }

    /// Notes that the local process `watcher` monitors the remote process `target`.
    pub fn watch(&self, watcher: &Pid, target: Pid, reference: Ref) {
        if let Some(n) = self.number(watcher) {
            self.watching.lock().insert(reference, (n, target));
        }
    }

    /// A monitor a local process held on a remote one fired or was removed: who held it, on what.
    pub fn unwatch(&self, reference: &Ref) -> Option<(Pid, Pid)> {
        let (n, target) = self.watching.lock().remove(reference)?;
        Some((self.pid(n), target))
    }

    /// Links the local process `local` with `other`. Returns false when `local` is not alive.
    pub fn add_link(&self, local: &Pid, other: Pid) -> bool {
        let Some(n) = self.number(local) else {
            return false;
        };
        let mut links = self.links.lock();
        if !self.alive(n) {
            return false;
        }
        let list = links.entry(n).or_default();
        if !list.contains(&other) {
            list.push(other);
        }
        true
    }

    /// Removes a link (either side asked). Returns whether there was one.
    pub fn unlink(&self, local: &Pid, other: &Pid) -> bool {
        let Some(n) = self.number(local) else {
            return false;
        };
        let mut links = self.links.lock();
        let Some(list) = links.get_mut(&n) else {
            return false;
        };
        let before = list.len();
        list.retain(|p| p != other);
        let removed = list.len() != before;
        if list.is_empty() {
            links.remove(&n);
        }
        removed
    }

    /// Local process `pid` has exited: it is removed (with its name), and what watched it or
    /// was linked to it is returned for the node to tell.
    pub fn exit(&self, pid: &Pid) -> Exited {
        let Some(n) = self.number(pid) else {
            return Exited::default();
        };
        let watchers = {
            let mut monitors = self.monitors.lock();
            if self.live.write().remove(&n).is_none() {
                return Exited::default();
            }
            monitors.remove(&n).unwrap_or_default()
        };
        self.names.write().retain(|_, m| *m != n);
        let linked = self.links.lock().remove(&n).unwrap_or_default();
        let mut watching = self.watching.lock();
        watching.retain(|_, (watcher, _)| *watcher != n);
        Exited {
            watchers: watchers
                .into_iter()
                .map(|w| (w.pid, w.reference, w.name))
                .collect(),
            linked,
        }
    }

    /// `peer` disconnected: its monitors and links on local processes are forgotten; returns the
    /// monitors local processes held on its processes, `(watcher, reference, target)`, which
    /// fire with `noconnection`.
    ///
    /// Unlike a BEAM process, a local process is not sent an exit signal for a link to a
    /// process of the lost peer: a client's connection going away is not the local process
    /// failing (a record must never be lost to a network event).
    pub fn node_down(&self, peer: &str) -> Vec<(Pid, Ref, Pid)> {
        let from_peer = |pid: &Pid| pid.node.as_str() == peer;
        self.monitors.lock().retain(|_, list| {
            list.retain(|w| !from_peer(&w.pid));
            !list.is_empty()
        });
        self.links.lock().retain(|_, list| {
            list.retain(|p| !from_peer(p));
            !list.is_empty()
        });
        let mut fired = Vec::new();
        self.watching.lock().retain(|reference, (watcher, target)| {
            if from_peer(target) {
                fired.push((self.pid(*watcher), *reference, *target));
                false
            } else {
                true
            }
        });
        fired
    }

    /// Counts of what the table holds: `(processes, monitors on local processes, monitors held
    /// on remote ones, links)`.
    pub fn sizes(&self) -> (usize, usize, usize, usize) {
        (
            self.count(),
            self.monitors.lock().values().map(Vec::len).sum(),
            self.watching.lock().len(),
            self.links.lock().values().map(Vec::len).sum(),
        )
    }

    /// The node name atom.
    pub fn node_atom(&self) -> Atom {
        self.node
    }
}
