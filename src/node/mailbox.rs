//! A mailbox: a process whose signals queue up for Rust code to receive, as a shell process
//! does for a person. Rust code uses it to call `gen_server`s of its own node (or of a connected
//! peer) and to watch processes; the tests use it to drive a node built without sockets.

use super::Node;
use super::process::Process;
use crate::term::{Atom, Pid, Ref, Value, atoms};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

/// Something a mailbox received.
#[derive(Debug, Clone, PartialEq)]
pub enum Signal {
    /// A message.
    Message(Value),
    /// An exit signal (the mailbox does not die of it).
    Exit {
        /// Who sent it.
        from: Pid,
        /// The reason.
        reason: Value,
        /// Whether it came along a link.
        link: bool,
    },
    /// A monitor fired.
    Down {
        /// The monitor.
        reference: Ref,
        /// The monitored process.
        target: Pid,
        /// Why it went down.
        reason: Value,
    },
}

struct Inbox(UnboundedSender<Signal>);

impl Process for Inbox {
    fn deliver(&self, _node: &Arc<Node>, _from: Option<Pid>, message: Value) {
        let _ = self.0.send(Signal::Message(message));
    }

    fn exit_signal(&self, _node: &Arc<Node>, from: Pid, reason: Value, link: bool) {
        let _ = self.0.send(Signal::Exit { from, reason, link });
    }

    fn down(&self, _node: &Arc<Node>, reference: Ref, target: Pid, reason: Value) {
        let _ = self.0.send(Signal::Down {
            reference,
            target,
            reason,
        });
    }
}

/// Why a call through a mailbox failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// Nothing is registered under the name.
    #[error("no process is registered as {0}")]
    NoProcess(String),
    /// No reply in time.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// The peer could not be reached.
    #[error("cannot reach {node}: {reason}")]
    Unreachable {
        /// The peer.
        node: String,
        /// Why.
        reason: String,
    },
}

/// A process of the node whose signals Rust code receives. It exits (`normal`) when dropped.
pub struct Mailbox {
    node: Arc<Node>,
    pid: Pid,
    inbox: Mutex<Inbox2>,
}

/// The channel, and the signals a selective receive passed over (kept in order).
struct Inbox2 {
    rx: UnboundedReceiver<Signal>,
    saved: std::collections::VecDeque<Signal>,
}

impl Mailbox {
    /// Spawns a mailbox on `node`.
    pub fn new(node: &Arc<Node>) -> Mailbox {
        let (tx, rx) = unbounded_channel();
        let pid = node.spawn(|_| Arc::new(Inbox(tx)));
        Mailbox {
            node: node.clone(),
            pid,
            inbox: Mutex::new(Inbox2 {
                rx,
                saved: std::collections::VecDeque::new(),
            }),
        }
    }

    /// The mailbox's pid.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// The next signal, if one comes within `timeout`.
    pub async fn recv(&self, timeout: Duration) -> Option<Signal> {
        self.recv_matching(timeout, |_| true).await
    }

    /// The first signal that `keep` accepts within `timeout`, as Erlang's selective receive:
    /// the others stay in the mailbox, in order, for later receives.
    pub async fn recv_matching(
        &self,
        timeout: Duration,
        mut keep: impl FnMut(&Signal) -> bool,
    ) -> Option<Signal> {
        let mut inbox = self.inbox.lock().await;
        if let Some(i) = inbox.saved.iter().position(&mut keep) {
            return inbox.saved.remove(i);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let signal = tokio::time::timeout_at(deadline, inbox.rx.recv())
                .await
                .ok()
                .flatten()?;
            if keep(&signal) {
                return Some(signal);
            }
            inbox.saved.push_back(signal);
        }
    }

    /// `gen_server:call(Name, Request, Timeout)` to a process registered on this node.
    pub async fn call(
        &self,
        name: &str,
        request: Value,
        timeout: Duration,
    ) -> Result<Value, CallError> {
        let to = self
            .node
            .whereis(name)
            .ok_or_else(|| CallError::NoProcess(name.to_string()))?;
        self.call_pid(&to, request, timeout).await
    }

    /// `gen_server:call({Name, Peer}, Request, Timeout)` to a process registered on another
    /// node, connecting to it first if needed.
    pub async fn call_remote(
        &self,
        peer: &erl_dist::node::NodeName,
        name: &str,
        request: Value,
        timeout: Duration,
    ) -> Result<Value, CallError> {
        let (node, to) = self.reach(peer, name, timeout).await?;
        let tag = self.send_call(peer, node, to, request)?;
        self.reply_to(tag, timeout).await
    }

    /// [`Mailbox::call_remote`] with a monitor on the name, as `gen_server:call` makes it:
    /// [`CallError::NoProcess`] at once when nothing is registered under `name` on `peer` (a
    /// node that does not run that process at all), instead of no reply within `timeout`.
    /// Costs two more messages than [`Mailbox::call_remote`]; for asking a peer what it is.
    pub async fn call_remote_monitored(
        &self,
        peer: &erl_dist::node::NodeName,
        name: &str,
        request: Value,
        timeout: Duration,
    ) -> Result<Value, CallError> {
        let (node, to) = self.reach(peer, name, timeout).await?;
        let monitor = self.node.monitor_name(&self.pid, node, to);
        let answer = self
            .call_until_down(peer, node, to, request, timeout, &monitor)
            .await;
        // Nothing is sent when the monitor fired (its watch is gone).
        self.node.demonitor_name(&self.pid, node, to, &monitor);
        answer
    }

    /// [`Mailbox::call_remote`] that ends at once with [`CallError::Unreachable`] when the
    /// connection to `peer` goes down while it waits, instead of at `timeout`: a watch on the
    /// connection kept on this node (nothing more is sent). For calls whose answer may take
    /// long, so that the caller tries elsewhere.
    pub async fn call_remote_watched(
        &self,
        peer: &erl_dist::node::NodeName,
        name: &str,
        request: Value,
        timeout: Duration,
    ) -> Result<Value, CallError> {
        let (node, to) = self.reach(peer, name, timeout).await?;
        let watch = self.node.make_ref();
        let target = Pid {
            node,
            id: 0,
            serial: 0,
            creation: 0,
        };
        self.node.processes.watch(&self.pid, target, watch);
        // Gone between reaching it and the watch: its 'DOWN' has fired already.
        if self.node.conn(&peer.to_string()).is_none() {
            self.node.processes.unwatch(&watch);
            return Err(CallError::Unreachable {
                node: peer.to_string(),
                reason: "noconnection".to_string(),
            });
        }
        let answer = self
            .call_until_down(peer, node, to, request, timeout, &watch)
            .await;
        self.node.processes.unwatch(&watch);
        answer
    }

    /// Sends the call and waits for its reply or for the 'DOWN' of `down` (a monitor or a
    /// watch the caller set): [`CallError::NoProcess`] for `noproc`, else
    /// [`CallError::Unreachable`].
    async fn call_until_down(
        &self,
        peer: &erl_dist::node::NodeName,
        node: Atom,
        to: Atom,
        request: Value,
        timeout: Duration,
        down: &Ref,
    ) -> Result<Value, CallError> {
        let tag = self.send_call(peer, node, to, request)?;
        let answer = self
            .recv_matching(timeout, |signal| match signal {
                Signal::Down { reference, .. } => reference == down,
                _ => is_reply(signal, &tag),
            })
            .await;
        match answer {
            Some(Signal::Down { reason, .. }) if reason == Value::Atom(*atoms::NOPROC) => {
                Err(CallError::NoProcess(to.as_str().to_string()))
            }
            Some(Signal::Down { reason, .. }) => Err(CallError::Unreachable {
                node: peer.to_string(),
                reason: format!("{reason:?}"),
            }),
            Some(reply) => Ok(reply_of(reply)),
            None => Err(CallError::Timeout(timeout)),
        }
    }

    /// Connects to `peer` (within `timeout`); the peer's and the name's atoms.
    async fn reach(
        &self,
        peer: &erl_dist::node::NodeName,
        name: &str,
        timeout: Duration,
    ) -> Result<(Atom, Atom), CallError> {
        let unreachable = |reason: String| CallError::Unreachable {
            node: peer.to_string(),
            reason,
        };
        match tokio::time::timeout(timeout, self.node.connect(peer)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(unreachable(e.to_string())),
            Err(_) => return Err(CallError::Timeout(timeout)),
        }
        address(peer, name).map_err(|e| unreachable(e.to_string()))
    }

    /// Sends `message` to the process registered as `to` on `node`, written from this task;
    /// false when `node` is not connected.
    fn reg_send_now(&self, node: Atom, to: Atom, message: &Value) -> bool {
        let from = self.pid;
        self.node
            .write_to_now(node, |w| w.reg_send(&from, to, |t| t.term(message)))
    }

    /// Sends `{'$gen_call', {Self, Tag}, Request}` to `to` on `node`; the tag.
    fn send_call(
        &self,
        peer: &erl_dist::node::NodeName,
        node: Atom,
        to: Atom,
        request: Value,
    ) -> Result<Ref, CallError> {
        let (tag, call) = self.call_message(request);
        // Written from this task: the caller waits for the answer anyway.
        if !self.reg_send_now(node, to, &call) {
            return Err(CallError::Unreachable {
                node: peer.to_string(),
                reason: "not connected".into(),
            });
        }
        Ok(tag)
    }

    /// `gen_server:call(Pid, Request, Timeout)`.
    pub async fn call_pid(
        &self,
        to: &Pid,
        request: Value,
        timeout: Duration,
    ) -> Result<Value, CallError> {
        let (tag, call) = self.call_message(request);
        self.node.send(to, &call);
        self.reply_to(tag, timeout).await
    }

    /// A new tag and the call `{'$gen_call', {Self, Tag}, Request}` carrying it.
    fn call_message(&self, request: Value) -> (Ref, Value) {
        let tag = self.node.make_ref();
        let from = super::genserver::From {
            pid: self.pid,
            tag: Value::Ref(Box::new(tag)),
        };
        (tag, super::genserver::call_message(&from, request))
    }

    /// Waits for the reply `{Tag, Reply}` of a call.
    async fn reply_to(&self, tag: Ref, timeout: Duration) -> Result<Value, CallError> {
        match self
            .recv_matching(timeout, |signal| is_reply(signal, &tag))
            .await
        {
            Some(signal) => Ok(reply_of(signal)),
            None => Err(CallError::Timeout(timeout)),
        }
    }

    /// `gen_server:cast({Name, Peer}, Request)` over a connection already up (no connecting:
    /// a cast waits for nothing); false when `peer` is not connected.
    pub fn cast_remote(&self, peer: &erl_dist::node::NodeName, name: &str, request: Value) -> bool {
        let Ok((node, to)) = address(peer, name) else {
            return false;
        };
        self.reg_send_now(node, to, &super::genserver::cast_message(request))
    }

    /// `gen_server:cast(Name, Request)` to a process registered on this node.
    pub fn cast(&self, name: &str, request: Value) -> bool {
        let Some(to) = self.node.whereis(name) else {
            return false;
        };
        self.node
            .send(&to, &super::genserver::cast_message(request))
    }

    /// Monitors `target`: a [`Signal::Down`] arrives when it exits.
    pub fn monitor(&self, target: &Pid) -> Ref {
        self.node.monitor(&self.pid, target)
    }

    /// Links to `target` (as `link/1` from a process of this node).
    pub fn link(&self, target: &Pid) -> bool {
        self.node.link(&self.pid, target)
    }

    /// Sends `exit(Target, Reason)` to the local process `target`.
    pub fn exit(&self, target: &Pid, reason: Value) {
        if let Some(process) = self.node.processes.resolve(target) {
            process.exit_signal(&self.node, self.pid, reason, false);
        }
    }
}

/// The atoms of `peer`'s name and of `name`: where a message to a process registered on
/// another node goes.
fn address(
    peer: &erl_dist::node::NodeName,
    name: &str,
) -> Result<(Atom, Atom), crate::term::AtomTableFull> {
    Ok((Atom::new(&peer.to_string())?, Atom::new(name)?))
}

/// Whether `signal` is the reply `{Tag, Reply}` to the call tagged `tag`.
fn is_reply(signal: &Signal, tag: &Ref) -> bool {
    match signal {
        Signal::Message(Value::Tuple(items)) => {
            items.len() == 2 && matches!(&items[0], Value::Ref(r) if **r == *tag)
        }
        _ => false,
    }
}

/// The `Reply` of a signal [`is_reply`] matched.
fn reply_of(signal: Signal) -> Value {
    match signal {
        Signal::Message(Value::Tuple(items)) => items.into_vec().pop().unwrap_or_else(Value::nil),
        _ => Value::nil(),
    }
}

impl Drop for Mailbox {
    fn drop(&mut self) {
        self.node.exit(&self.pid, &Value::Atom(*atoms::NORMAL));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::term::parse_term;

    const WAIT: Duration = Duration::from_secs(5);

    fn node(name: &str) -> Arc<Node> {
        let config = super::super::NodeConfig::new(name.parse().unwrap(), "cookie".into());
        Node::new(config, 7).unwrap()
    }

    #[tokio::test]
    async fn local_processes_message_monitor_and_link_each_other() {
        let node = node("mailboxes@127.0.0.1");
        let a = Mailbox::new(&node);
        let b = Mailbox::new(&node);
        assert_ne!(a.pid(), b.pid());

        assert!(node.send(&b.pid(), &parse_term("hello").unwrap()));
        assert_eq!(
            b.recv(WAIT).await,
            Some(Signal::Message(parse_term("hello").unwrap()))
        );

        let reference = a.monitor(&b.pid());
        assert!(b.link(&a.pid()));
        let b_pid = b.pid();
        drop(b);
        assert_eq!(
            a.recv(WAIT).await,
            Some(Signal::Down {
                reference,
                target: b_pid,
                reason: Value::Atom(*atoms::NORMAL)
            })
        );
        assert_eq!(
            a.recv(WAIT).await,
            Some(Signal::Exit {
                from: b_pid,
                reason: Value::Atom(*atoms::NORMAL),
                link: true
            })
        );
        // A dead process cannot be messaged, and monitoring it fires at once.
        assert!(!node.send(&b_pid, &Value::nil()));
        let reference = a.monitor(&b_pid);
        assert_eq!(
            a.recv(WAIT).await,
            Some(Signal::Down {
                reference,
                target: b_pid,
                reason: Value::Atom(*atoms::NOPROC)
            })
        );
        assert_eq!(node.processes.sizes(), (2, 0, 0, 0));
    }

    #[tokio::test]
    async fn registered_names_and_net_kernel() {
        let node = node("names@127.0.0.1");
        let a = Mailbox::new(&node);
        assert!(node.whereis("net_kernel").is_some());
        assert_eq!(
            a.call("net_kernel", parse_term("{is_auth, x}").unwrap(), WAIT)
                .await
                .unwrap(),
            parse_term("yes").unwrap()
        );
        assert!(matches!(
            a.call("nobody", Value::nil(), WAIT).await,
            Err(CallError::NoProcess(_))
        ));
        let pid = node.register("echo", |_| Arc::new(Inbox(unbounded_channel().0)));
        assert_eq!(node.whereis("echo"), pid);
        assert!(
            node.register("echo", |_| Arc::new(Inbox(unbounded_channel().0)))
                .is_none()
        );
        node.exit(&pid.unwrap(), &Value::Atom(*atoms::NORMAL));
        assert_eq!(node.whereis("echo"), None);
    }

    #[tokio::test]
    async fn a_name_taken_over_moves_its_holder_to_another_name() {
        let node = node("over@127.0.0.1");
        let inbox = || Arc::new(Inbox(unbounded_channel().0));
        let first = node.register("svc", |_| inbox()).unwrap();
        let second = node.register_over("svc", "svc_old", |_| inbox()).unwrap();
        assert_eq!(node.whereis("svc"), Some(second));
        assert_eq!(node.whereis("svc_old"), Some(first));
        // The name to move to is taken now: nothing changes.
        assert!(node.register_over("svc", "svc_old", |_| inbox()).is_none());
        assert_eq!(node.whereis("svc"), Some(second));
        assert_eq!(node.whereis("svc_old"), Some(first));
        // A free name is simply registered.
        let third = node
            .register_over("fresh", "fresh_old", |_| inbox())
            .unwrap();
        assert_eq!(node.whereis("fresh"), Some(third));
        assert_eq!(node.whereis("fresh_old"), None);
    }

    #[tokio::test]
    async fn a_monitor_on_a_name_of_an_unconnected_peer_fires_at_once() {
        let node = node("named@127.0.0.1");
        let a = Mailbox::new(&node);
        let peer = crate::term::Atom::new("away@127.0.0.1").unwrap();
        let name = crate::term::Atom::new("somebody").unwrap();
        let reference = node.monitor_name(&a.pid(), peer, name);
        assert_eq!(
            a.recv(WAIT).await,
            Some(Signal::Down {
                reference,
                target: Pid {
                    node: peer,
                    id: 0,
                    serial: 0,
                    creation: 0
                },
                reason: Value::Atom(*atoms::NOCONNECTION)
            })
        );
        // Nothing is left watched.
        assert!(node.processes.unwatch(&reference).is_none());
    }

    #[tokio::test]
    async fn monitors_on_a_peer_fire_noconnection_when_it_goes() {
        let node = node("peers@127.0.0.1");
        let a = Mailbox::new(&node);
        let remote = Pid {
            node: crate::term::Atom::new("gone@127.0.0.1").unwrap(),
            id: 1,
            serial: 0,
            creation: 1,
        };
        // Not connected: the monitor fires at once.
        let reference = a.monitor(&remote);
        assert_eq!(
            a.recv(WAIT).await,
            Some(Signal::Down {
                reference,
                target: remote,
                reason: Value::Atom(*atoms::NOCONNECTION)
            })
        );
        // Held on a peer that then disconnects: it fires, and node-down hooks run.
        let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let hook_seen = seen.clone();
        node.on_node_down(Box::new(move |_, peer| {
            hook_seen.lock().push(peer.to_string())
        }));
        let reference = node.make_ref();
        node.processes.watch(&a.pid(), remote, reference);
        node.peer_gone("gone@127.0.0.1");
        assert_eq!(
            a.recv(WAIT).await,
            Some(Signal::Down {
                reference,
                target: remote,
                reason: Value::Atom(*atoms::NOCONNECTION)
            })
        );
        assert_eq!(*seen.lock(), vec!["gone@127.0.0.1".to_string()]);
    }
}
