//! The node's control process, registered as [`CONTROL_NAME`]: `ash-gen-server drain --node N`
//! calls it with `drain`, and the node then stops as on SIGTERM (a cluster member leaves the
//! cluster first — even one with a data directory, which keeps its place on SIGTERM — calls
//! already received are answered, then it exits 0).
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
}

fn atom(name: &'static str) -> Value {
    Value::Atom(Atom::from_static(name))
}

/// Registers the control process on `node`; the returned [`Notify`] is notified once a
/// `drain` was asked for (and answered `ok`). `None` when the name is taken.
pub fn register(node: &Arc<Node>) -> Option<(Pid, Arc<Notify>)> {
    let stop = Arc::new(Notify::new());
    let process = Control { stop: stop.clone() };
    let pid = node.register(CONTROL_NAME, |_| Arc::new(process))?;
    Some((pid, stop))
}

impl Process for Control {
    fn deliver(&self, node: &Arc<Node>, _from: Option<Pid>, message: Value) {
        match genserver::classify(message) {
            GenMessage::Call(from, request) => {
                if request.as_atom().map(|a| a.as_str()) == Some("drain") {
                    tracing::info!("drain asked for: stopping as on SIGTERM");
                    node.reply(&from, &atom("ok"));
                    self.stop.notify_one();
                } else {
                    node.reply(
                        &from,
                        &Value::pair(atom("error"), Value::pair(atom("unknown_request"), request)),
                    );
                }
            }
            other => tracing::debug!(message = ?other, "the control process ignored a message"),
        }
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
        let (_, stop) = register(&node).expect("registered");
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
}
