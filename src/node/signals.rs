//! Signals between processes — messages, exits, monitors — to local and remote processes alike.
//!
//! This is the node's process API: what a [`Process`] (or anything holding the [`Node`]) uses
//! to reach other processes. A signal to a local pid is handed to its process at once, on the
//! caller's task; one to a remote pid is encoded into the peer's connection, and dropped if the
//! peer is not connected, as Erlang drops it. A monitor that cannot be set (the target is dead
//! or its node unreachable) fires at once with `noproc` or `noconnection`, delivered on another
//! task so the caller may hold its own locks while it monitors.

use super::Node;
use super::process::Process;
use crate::term::{Atom, Pid, Ref, Value, atoms};
use crate::wire::dist::ProcRef;
use crate::wire::etf::{self, TermWriter};
use std::sync::Arc;

impl Node {
    /// Gives a new process a pid; `make` builds it knowing its pid.
    pub fn spawn(&self, make: impl FnOnce(Pid) -> Arc<dyn Process>) -> Pid {
        self.processes.spawn(make)
    }

    /// Spawns a process registered under `name`; `None` if the name is taken.
    pub fn register(&self, name: &str, make: impl FnOnce(Pid) -> Arc<dyn Process>) -> Option<Pid> {
        let name = Atom::new(name).ok()?;
        self.processes.register(name, make)
    }

    /// Spawns a process registered under `name`; the process that had the name (if any) is
    /// registered as `moved_to` instead, in the same step ([`super::process::ProcessTable::register_over`]).
    /// `None` if `moved_to` is taken.
    pub fn register_over(
        &self,
        name: &str,
        moved_to: &str,
        make: impl FnOnce(Pid) -> Arc<dyn Process>,
    ) -> Option<Pid> {
        let (name, moved_to) = (Atom::new(name).ok()?, Atom::new(moved_to).ok()?);
        self.processes.register_over(name, moved_to, make)
    }

    /// The pid registered under `name`.
    pub fn whereis(&self, name: &str) -> Option<Pid> {
        self.processes.whereis(Atom::new(name).ok()?)
    }

    /// Sends `message` to `to`. Returns whether it was delivered or queued.
    pub fn send(self: &Arc<Self>, to: &Pid, message: &Value) -> bool {
        if self.processes.is_local(to) {
            return self.deliver_local(to, None, message.clone());
        }
        self.write_to(to.node, |w| w.send(to, |t| t.term(message)))
    }

    /// Sends the message `payload` writes to `to`, encoding it straight into the connection
    /// when `to` is remote (no term is built). Returns whether it was delivered or queued.
    pub fn send_with(self: &Arc<Self>, to: &Pid, mut payload: impl FnMut(&mut TermWriter)) -> bool {
        if !self.processes.is_local(to) {
            return self.write_to(to.node, |w| w.send(to, payload));
        }
        let mut bytes = vec![131];
        payload(&mut TermWriter::plain(&mut bytes));
        match etf::decode(&bytes) {
            Ok((message, _)) => self.deliver_local(to, None, message),
            Err(e) => {
                tracing::error!(%to, error = %e, "a local message did not decode");
                false
            }
        }
    }

    fn deliver_local(self: &Arc<Self>, to: &Pid, from: Option<Pid>, message: Value) -> bool {
        match self.processes.resolve(to) {
            Some(process) => {
                process.deliver(self, from, message);
                true
            }
            None => false,
        }
    }

    /// The local process `pid` exits with `reason`: it is removed, its monitors get `'DOWN'`
    /// and its links an exit signal.
    pub fn exit(self: &Arc<Self>, pid: &Pid, reason: &Value) {
        let exited = self.processes.exit(pid);
        for (watcher, reference, name) in exited.watchers {
            if self.processes.is_local(&watcher) {
                if let Some(process) = self.processes.resolve(&watcher) {
                    process.down(self, reference, *pid, reason.clone());
                }
                continue;
            }
            let from = match name {
                Some(name) => ProcRef::Name(name),
                None => ProcRef::Pid(*pid),
            };
            self.write_to(watcher.node, |w| {
                w.monitor_exit(&from, &watcher, &reference, reason)
            });
        }
        for linked in exited.linked {
            if self.processes.is_local(&linked) {
                // The link is gone on the partner's side too.
                self.processes.unlink(&linked, pid);
                if let Some(process) = self.processes.resolve(&linked) {
                    process.exit_signal(self, *pid, reason.clone(), true);
                }
            } else {
                self.write_to(linked.node, |w| w.exit(pid, &linked, reason));
            }
        }
    }

    /// The local process `watcher` monitors `target`; returns the monitor's reference. Its
    /// [`Process::down`] is called when the target exits (or its node disconnects).
    pub fn monitor(self: &Arc<Self>, watcher: &Pid, target: &Pid) -> Ref {
        let reference = self.make_ref();
        if self.processes.is_local(target) {
            if !self
                .processes
                .add_monitor(*watcher, target, reference, None)
            {
                self.down_later(*watcher, reference, *target, Value::Atom(*atoms::NOPROC));
            }
            return reference;
        }
        self.processes.watch(watcher, *target, reference);
        let sent = self.write_to(target.node, |w| {
            w.monitor(watcher, &ProcRef::Pid(*target), &reference)
        });
        if !sent && self.processes.unwatch(&reference).is_some() {
            self.down_later(
                *watcher,
                reference,
                *target,
                Value::Atom(*atoms::NOCONNECTION),
            );
        }
        reference
    }

    /// The local process `watcher` monitors the process registered as `name` on the connected
    /// node `peer`, as `erlang:monitor(process, {Name, Peer})`: the peer answers `noproc` at
    /// once when nothing is registered under the name, and the monitor fires like any other
    /// when the process exits or the peer disconnects. The 'DOWN' names `<Peer.0.0>` (the pid
    /// is not known) as its target.
    pub fn monitor_name(self: &Arc<Self>, watcher: &Pid, peer: Atom, name: Atom) -> Ref {
        let reference = self.make_ref();
        let target = Pid {
            node: peer,
            id: 0,
            serial: 0,
            creation: 0,
        };
        self.processes.watch(watcher, target, reference);
        let sent = self.write_to(peer, |w| {
            w.monitor(watcher, &ProcRef::Name(name), &reference)
        });
        if !sent && self.processes.unwatch(&reference).is_some() {
            self.down_later(
                *watcher,
                reference,
                target,
                Value::Atom(*atoms::NOCONNECTION),
            );
        }
        reference
    }

    /// Removes the monitor [`Node::monitor_name`] set.
    pub fn demonitor_name(
        self: &Arc<Self>,
        watcher: &Pid,
        peer: Atom,
        name: Atom,
        reference: &Ref,
    ) {
        if self.processes.unwatch(reference).is_some() {
            self.write_to(peer, |w| {
                w.demonitor(watcher, &ProcRef::Name(name), reference)
            });
        }
    }

    /// Removes the monitor `reference` that `watcher` holds on `target`.
    pub fn demonitor(self: &Arc<Self>, watcher: &Pid, target: &Pid, reference: &Ref) {
        if self.processes.is_local(target) {
            self.processes.remove_monitor(target, reference);
        } else if self.processes.unwatch(reference).is_some() {
            self.write_to(target.node, |w| {
                w.demonitor(watcher, &ProcRef::Pid(*target), reference)
            });
        }
    }

    /// Links the local process `local` with `other` (local or remote), as `link/1` called by
    /// `local`. Returns false when either is known to be gone (a remote one that is gone
    /// answers with an exit signal, as on the BEAM).
    pub fn link(self: &Arc<Self>, local: &Pid, other: &Pid) -> bool {
        if !self.processes.add_link(local, *other) {
            return false;
        }
        if self.processes.is_local(other) {
            if self.processes.add_link(other, *local) {
                return true;
            }
            self.processes.unlink(local, other);
            return false;
        }
        if self.write_to(other.node, |w| w.link(local, other)) {
            return true;
        }
        self.processes.unlink(local, other);
        false
    }

    /// Tells `watcher` its monitor fired, from another task when there is a runtime.
    fn down_later(self: &Arc<Self>, watcher: Pid, reference: Ref, target: Pid, reason: Value) {
        let node = self.clone();
        let down = move || {
            if let Some(process) = node.processes.resolve(&watcher) {
                process.down(&node, reference, target, reason);
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move { down() });
            }
            Err(_) => down(),
        }
    }

    /// `peer` disconnected: monitors local processes held on its processes fire with
    /// `noconnection`, and its monitors and links on local processes are forgotten.
    pub(super) fn node_down_signals(self: &Arc<Self>, peer: &str) {
        for (watcher, reference, target) in self.processes.node_down(peer) {
            if let Some(process) = self.processes.resolve(&watcher) {
                process.down(self, reference, target, Value::Atom(*atoms::NOCONNECTION));
            }
        }
    }

    /// A remote process `watcher` monitors the local process `target` (by pid or name); a
    /// target that does not exist gets it `'DOWN'` with `noproc` at once.
    pub(super) fn monitored_by(self: &Arc<Self>, watcher: Pid, target: ProcRef, reference: Ref) {
        let (pid, name) = match &target {
            ProcRef::Pid(pid) => (Some(*pid), None),
            ProcRef::Name(name) => (self.processes.whereis(*name), Some(*name)),
        };
        if let Some(pid) = pid
            && self.processes.add_monitor(watcher, &pid, reference, name)
        {
            return;
        }
        let noproc = Value::Atom(*atoms::NOPROC);
        self.write_to(watcher.node, |w| {
            w.monitor_exit(&target, &watcher, &reference, &noproc)
        });
    }

    /// A remote process `from` links to the local process `to`; if `to` does not exist, `from`
    /// gets an exit signal with `noproc`.
    pub(super) fn linked_by(self: &Arc<Self>, from: Pid, to: Pid) {
        if !self.processes.add_link(&to, from) {
            let noproc = Value::Atom(*atoms::NOPROC);
            self.write_to(from.node, |w| w.exit(&to, &from, &noproc));
        }
    }
}
