//! The `gen_server` conventions: recognising calls and casts, and replying.
//!
//! A call is `{'$gen_call', {From, Tag}, Request}`; the reply is `{Tag, Reply}` sent to `From`.
//! Since OTP 24 the tag may be `[alias | Ref]`: then the reply goes to the alias when the peer
//! supports aliases, so a caller that gave up waiting never receives a stale reply.

use super::Node;
use super::process::NODE_PID;
use crate::term::{Pid, Ref, Value};
use crate::wire::etf::TermWriter;
use erl_dist::DistributionFlags;

/// Who to reply to.
#[derive(Debug, Clone)]
pub struct From {
    /// The calling process.
    pub pid: Pid,
    /// The call's tag, echoed in the reply.
    pub tag: Value,
}

/// A message to a `gen_server`-like process.
#[derive(Debug)]
pub enum GenMessage {
    /// `{'$gen_call', From, Request}`.
    Call(From, Value),
    /// `{'$gen_cast', Request}`.
    Cast(Value),
    /// Anything else (kept for the log).
    Info(Value),
}

fn atom_is(v: &Value, name: &str) -> bool {
    matches!(v, Value::Atom(a) if a.as_str() == name)
}

/// The message `{'$gen_call', {From, Tag}, Request}`: a call from `from`, to hand to a
/// process so that it replies to the original caller.
pub fn call_message(from: &From, request: Value) -> Value {
    Value::tuple(vec![
        Value::Atom(*crate::term::atoms::GEN_CALL),
        Value::pair(Value::Pid(Box::new(from.pid)), from.tag.clone()),
        request,
    ])
}

/// The message `{'$gen_cast', Request}`: a cast, as `gen_server:cast/2` sends it.
pub fn cast_message(request: Value) -> Value {
    Value::pair(Value::Atom(*crate::term::atoms::GEN_CAST), request)
}

/// Sorts a message into call, cast, or other.
pub fn classify(message: Value) -> GenMessage {
    let Value::Tuple(items) = message else {
        return GenMessage::Info(message);
    };
    if items.len() == 3 && atom_is(&items[0], "$gen_call") {
        if let Some([Value::Pid(pid), _tag]) = items[1].as_tuple() {
            let pid = **pid;
            let mut items = items.into_vec();
            let request = items.pop().unwrap_or_else(Value::nil);
            let tag = match items.pop() {
                Some(Value::Tuple(from)) => from.into_vec().pop().unwrap_or_else(Value::nil),
                _ => Value::nil(),
            };
            return GenMessage::Call(From { pid, tag }, request);
        }
        return GenMessage::Info(Value::Tuple(items));
    }
    if items.len() == 2 && atom_is(&items[0], "$gen_cast") {
        let request = items.into_vec().pop().unwrap_or_else(Value::nil);
        return GenMessage::Cast(request);
    }
    GenMessage::Info(Value::Tuple(items))
}

/// The alias reference of an OTP 24+ tag `[alias | Ref]`.
fn alias_of(tag: &Value) -> Option<&Ref> {
    match tag {
        Value::ImproperList(pair) if pair.0.len() == 1 && atom_is(&pair.0[0], "alias") => {
            match &pair.1 {
                Value::Ref(r) => Some(r),
                _ => None,
            }
        }
        _ => None,
    }
}

impl Node {
    /// Sends the reply `{Tag, Reply}` to a caller.
    pub fn reply(self: &std::sync::Arc<Self>, from: &From, reply: &Value) {
        self.reply_with(from, |w| w.term(reply));
    }

    /// [`Node::reply`], written to the caller's connection from the calling task
    /// ([`super::connection::Conn::write_now`]): for a caller waiting on it in a chain of
    /// calls (a Raft message's answer).
    pub fn reply_now(self: &std::sync::Arc<Self>, from: &From, reply: &Value) {
        self.reply_by(from, |w| w.term(reply), true);
    }

    /// Sends `{Tag, Reply}` where `body` writes the reply term.
    pub fn reply_with(self: &std::sync::Arc<Self>, from: &From, body: impl FnMut(&mut TermWriter)) {
        self.reply_by(from, body, false);
    }

    fn reply_by(
        self: &std::sync::Arc<Self>,
        from: &From,
        mut body: impl FnMut(&mut TermWriter),
        now: bool,
    ) {
        let payload = |w: &mut TermWriter| {
            w.tuple_header(2);
            w.term(&from.tag);
            body(w);
        };
        if self.processes.is_local(&from.pid) {
            self.send_with(&from.pid, payload);
            return;
        }
        let Some(conn) = self.conn(from.pid.node.as_str()) else {
            tracing::debug!(to = %from.pid, "caller's node is gone; reply dropped");
            return;
        };
        let write = |w: &mut crate::wire::dist::FrameWriter| match alias_of(&from.tag) {
            Some(alias) if conn.has(DistributionFlags::ALIAS) => {
                w.alias_send(&self.processes.pid(NODE_PID), alias, payload)
            }
            _ => w.send(&from.pid, payload),
        };
        if now {
            conn.write_now(write);
        } else {
            conn.write(write);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::term::parse_term;

    #[test]
    fn recognises_calls_with_plain_and_alias_tags() {
        let pid = Pid {
            node: crate::term::Atom::new("peer@127.0.0.1").unwrap(),
            id: 5,
            serial: 0,
            creation: 1,
        };
        let r = Ref::new(pid.node, 1, &[1, 2, 3]);
        let alias_tag = Value::ImproperList(Box::new((
            vec![parse_term("alias").unwrap()].into_boxed_slice(),
            Value::Ref(Box::new(r)),
        )));
        for tag in [Value::Ref(Box::new(r)), alias_tag.clone()] {
            let msg = Value::tuple(vec![
                parse_term("'$gen_call'").unwrap(),
                Value::pair(Value::Pid(Box::new(pid)), tag.clone()),
                parse_term("ping").unwrap(),
            ]);
            match classify(msg) {
                GenMessage::Call(from, request) => {
                    assert_eq!(from.pid, pid);
                    assert_eq!(from.tag, tag);
                    assert_eq!(request, parse_term("ping").unwrap());
                }
                other => panic!("not a call: {other:?}"),
            }
        }
        assert_eq!(alias_of(&alias_tag), Some(&r));
        assert_eq!(alias_of(&Value::Ref(Box::new(r))), None);
    }

    #[test]
    fn recognises_casts_and_other_messages() {
        assert!(matches!(
            classify(parse_term("{'$gen_cast', hello}").unwrap()),
            GenMessage::Cast(_)
        ));
        assert!(matches!(
            classify(parse_term("x").unwrap()),
            GenMessage::Info(_)
        ));
        // A call whose From is not {Pid, Tag} cannot be answered.
        assert!(matches!(
            classify(parse_term("{'$gen_call', nobody, ping}").unwrap()),
            GenMessage::Info(_)
        ));
    }
}
