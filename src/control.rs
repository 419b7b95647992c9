//! The node's control process, registered as [`CONTROL_NAME`]: `ash-gen-server drain --node N`
//! calls it with `drain`, and the node then stops as on SIGTERM (a cluster member leaves the
//! cluster first — even one with a data directory, which keeps its place on SIGTERM — calls
//! already received are answered, then it exits 0).
//!
//!
//! With `--enable-fault-injection` it also cuts the node off from other nodes, for partition
//! tests on one machine: `{isolate, [Node]}` closes the connections to those nodes and refuses
//! new ones both ways until `heal` (see [`Node::isolate`]); without the flag both answer
//! `{error, fault_injection_disabled}`.
//!
//! It knows nothing of records or of the cluster: it only tells `main.rs` that a stop was asked.

use crate::node::genserver::{self, GenMessage};
use crate::node::{Node, Process};
use crate::term::{Atom, Pid, Value};
use std::sync::Arc;
use tokio::sync::Notify;

/// The control process's registered name.
pub const CONTROL_NAME: &str = "ash_gen_server_control";

struct Control {
    stop: Arc<Notify>,
    faults: bool,
}

fn atom(name: &'static str) -> Value {
    Value::Atom(Atom::from_static(name))
}

/// Registers the control process on `node`; the returned [`Notify`] is notified once a
/// `drain` was asked for (and answered `ok`). `faults`: whether `isolate` and `heal` are
/// served (`--enable-fault-injection`). `None` when the name is taken.
pub fn register(node: &Arc<Node>, faults: bool) -> Option<(Pid, Arc<Notify>)> {
    let stop = Arc::new(Notify::new());
    let process = Control {
        stop: stop.clone(),
        faults,
    };
    let pid = node.register(CONTROL_NAME, |_| Arc::new(process))?;
    Some((pid, stop))
}

impl Process for Control {
    fn deliver(&self, node: &Arc<Node>, _from: Option<Pid>, message: Value) {
        match genserver::classify(message) {
            GenMessage::Call(from, request) => {
                let reply = match Asked::of(&request) {
                    Asked::Drain => {
                        tracing::info!("drain asked for: stopping as on SIGTERM");
                        node.reply(&from, &atom("ok"));
                        self.stop.notify_one();
                        return;
                    }
                    Asked::Heal | Asked::Isolate(_) if !self.faults => fault_injection_disabled(),
                    Asked::Heal => {
                        tracing::warn!("healed: every peer may connect again");
                        node.heal();
                        atom("ok")
                    }
                    Asked::Isolate(peers) => isolate(node, peers),
                    Asked::Other => {
                        Value::pair(atom("error"), Value::pair(atom("unknown_request"), request))
                    }
                };
                node.reply(&from, &reply);
            }
            other => tracing::debug!(message = ?other, "the control process ignored a message"),
        }
    }
}

/// What a call to the control process asks for.
enum Asked<'a> {
    /// `drain`.
    Drain,
    /// `heal`.
    Heal,
    /// `{isolate, Peers}`.
    Isolate(&'a Value),
    /// Anything else.
    Other,
}

impl Asked<'_> {
    fn of(request: &Value) -> Asked<'_> {
        match (request.as_atom().map(|a| a.as_str()), request.as_tuple()) {
            (Some("drain"), _) => Asked::Drain,
            (Some("heal"), _) => Asked::Heal,
            (_, Some([tag, peers])) if tag.as_atom().map(|a| a.as_str()) == Some("isolate") => {
                Asked::Isolate(peers)
            }
            _ => Asked::Other,
        }
    }
}

fn fault_injection_disabled() -> Value {
    Value::pair(atom("error"), atom("fault_injection_disabled"))
}

/// `{isolate, [Node]}`: a list of node names (atoms).
fn isolate(node: &Arc<Node>, peers: &Value) -> Value {
    let names: Option<Vec<String>> = peers.as_list().and_then(|list| {
        list.iter()
            .map(|p| p.as_atom().map(|a| a.as_str().to_string()))
            .collect()
    });
    match names {
        Some(names) => {
            tracing::warn!(peers = ?names, "isolated from peers (fault injection)");
            node.isolate(names);
            atom("ok")
        }
        None => Value::pair(
            atom("error"),
            Value::pair(
                atom("bad_request"),
                Value::from("isolate takes a list of node names (atoms)"),
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::Mailbox;
    use std::time::Duration;

    #[tokio::test]
    async fn drain_is_answered_then_notified_and_other_requests_refused() {
        let config = crate::node::NodeConfig::new("control@127.0.0.1".parse().unwrap(), "c".into());
        let node = crate::node::Node::new(config, 3).unwrap();
        let (_, stop) = register(&node, false).expect("registered");
        let mailbox = Mailbox::new(&node);
        let reply = mailbox
            .call(CONTROL_NAME, atom("hello"), Duration::from_secs(5))
            .await
            .expect("a reply");
        assert_eq!(
            reply,
            Value::pair(
                atom("error"),
                Value::pair(atom("unknown_request"), atom("hello"))
            )
        );
        let reply = mailbox
            .call(CONTROL_NAME, atom("drain"), Duration::from_secs(5))
            .await
            .expect("a reply");
        assert_eq!(reply, atom("ok"));
        tokio::time::timeout(Duration::from_secs(5), stop.notified())
            .await
            .expect("notified");
    }

    #[tokio::test]
    async fn isolate_and_heal_only_with_fault_injection() {
        for faults in [false, true] {
            let name = format!("control{faults}@127.0.0.1");
            let config = crate::node::NodeConfig::new(name.parse().unwrap(), "c".into());
            let node = crate::node::Node::new(config, 3).unwrap();
            register(&node, faults).expect("registered");
            let mailbox = Mailbox::new(&node);
            let call = |request: Value| {
                let mailbox = &mailbox;
                async move {
                    mailbox
                        .call(CONTROL_NAME, request, Duration::from_secs(5))
                        .await
                        .expect("a reply")
                }
            };
            let peers = Value::list(vec![atom("a@h"), atom("b@h")]);
            let isolate = call(Value::pair(atom("isolate"), peers)).await;
            if !faults {
                assert_eq!(isolate, fault_injection_disabled());
                assert_eq!(call(atom("heal")).await, fault_injection_disabled());
                assert!(!node.is_isolated_from("a@h"));
                continue;
            }
            assert_eq!(isolate, atom("ok"));
            assert!(node.is_isolated_from("a@h") && node.is_isolated_from("b@h"));
            assert!(!node.is_isolated_from("c@h"));
            let bad = call(Value::pair(atom("isolate"), Value::from("a@h"))).await;
            assert!(matches!(bad.as_tuple(), Some([e, _]) if *e == atom("error")));
            assert!(
                node.is_isolated_from("a@h"),
                "a bad request changes nothing"
            );
            assert_eq!(call(atom("heal")).await, atom("ok"));
            assert!(!node.is_isolated_from("a@h"));
        }
    }
}
