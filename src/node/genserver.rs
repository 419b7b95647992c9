//! The `gen_server` conventions: recognising calls and casts, and replying.
//!
//! A call is `{'$gen_call', {From, Tag}, Request}`; the reply is `{Tag, Reply}` sent to `From`.
//! Since OTP 24 the tag may be `[alias | Ref]`: then the reply goes to the alias when the peer
//! supports aliases, so a caller that gave up waiting never receives a stale reply.

use super::Node;
use super::process::SERVER_PID;
use crate::term::{Value, to_term};
use eetf::{Pid, Term, Tuple};
use erl_dist::DistributionFlags;
use erl_dist::message::Message;

/// Who to reply to.
#[derive(Debug, Clone)]
pub struct From {
    /// The calling process.
    pub pid: Pid,
    /// The call's tag, echoed in the reply.
    pub tag: Term,
}

/// A message to a `gen_server`-like process.
#[derive(Debug)]
pub enum GenMessage {
    /// `{'$gen_call', From, Request}`.
    Call(From, Term),
    /// `{'$gen_cast', Request}`.
    Cast(Term),
    /// Anything else (kept for the log).
    Info(Term),
}

fn atom_is(term: &Term, name: &str) -> bool {
    matches!(term, Term::Atom(a) if a.name == name)
}

/// Sorts a message into call, cast, or other.
pub fn classify(message: Term) -> GenMessage {
    match message {
        Term::Tuple(Tuple { mut elements }) if !elements.is_empty() => {
            if elements.len() == 3 && atom_is(&elements[0], "$gen_call") {
                let request = elements.pop().unwrap_or(Term::from(eetf::List::nil()));
                let from = elements.pop().unwrap_or(Term::from(eetf::List::nil()));
                if let Term::Tuple(Tuple { elements: mut from }) = from
                    && from.len() == 2
                {
                    let tag = from.pop().unwrap_or(Term::from(eetf::List::nil()));
                    if let Some(Term::Pid(pid)) = from.pop() {
                        return GenMessage::Call(From { pid, tag }, request);
                    }
                }
                return GenMessage::Info(Term::Tuple(Tuple {
                    elements: vec![
                        Term::from(eetf::Atom::from("$gen_call")),
                        Term::from(eetf::Atom::from("malformed_from")),
                        request,
                    ],
                }));
            }
            if elements.len() == 2 && atom_is(&elements[0], "$gen_cast") {
                let request = elements.pop().unwrap_or(Term::from(eetf::List::nil()));
                return GenMessage::Cast(request);
            }
            GenMessage::Info(Term::Tuple(Tuple { elements }))
        }
        other => GenMessage::Info(other),
    }
}

/// The alias reference of an OTP 24+ tag `[alias | Ref]`.
fn alias_of(tag: &Term) -> Option<&eetf::Reference> {
    match tag {
        Term::ImproperList(l) if l.elements.len() == 1 && atom_is(&l.elements[0], "alias") => {
            match &*l.last {
                Term::Reference(r) => Some(r),
                _ => None,
            }
        }
        _ => None,
    }
}

impl Node {
    /// Sends the reply `{Tag, Reply}` to a caller.
    pub fn reply(&self, from: &From, reply: &Value) {
        self.reply_term(from, to_term(reply))
    }

    /// Sends a reply that is already a term.
    pub fn reply_term(&self, from: &From, reply: Term) {
        let message = Term::Tuple(Tuple {
            elements: vec![from.tag.clone(), reply],
        });
        let Some(conn) = self.conn(&from.pid.node.name) else {
            tracing::debug!(to = %from.pid, "caller's node is gone; reply dropped");
            return;
        };
        let msg = match alias_of(&from.tag) {
            Some(alias) if conn.has(DistributionFlags::ALIAS) => {
                Message::alias_send(self.processes.pid(SERVER_PID), alias.clone(), message)
            }
            _ => Message::send(from.pid.clone(), message),
        };
        conn.send(msg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid() -> Pid {
        Pid::new("peer@127.0.0.1", 5, 0, 1)
    }

    #[test]
    fn recognises_calls_with_plain_and_alias_tags() {
        let reference = eetf::Reference::from(("peer@127.0.0.1", vec![1, 2, 3]));
        let alias_tag = Term::ImproperList(eetf::ImproperList {
            elements: vec![Term::from(eetf::Atom::from("alias"))],
            last: Box::new(Term::from(reference.clone())),
        });
        for tag in [Term::from(reference.clone()), alias_tag.clone()] {
            let msg = Term::from(Tuple::from(vec![
                Term::from(eetf::Atom::from("$gen_call")),
                Term::from(Tuple::from(vec![Term::from(pid()), tag.clone()])),
                Term::from(eetf::Atom::from("ping")),
            ]));
            match classify(msg) {
                GenMessage::Call(from, request) => {
                    assert_eq!(from.pid, pid());
                    assert_eq!(from.tag, tag);
                    assert_eq!(request, Term::from(eetf::Atom::from("ping")));
                }
                other => panic!("not a call: {other:?}"),
            }
        }
        assert_eq!(alias_of(&alias_tag), Some(&reference));
        assert_eq!(alias_of(&Term::from(reference)), None);
    }

    #[test]
    fn recognises_casts_and_other_messages() {
        let cast = Term::from(Tuple::from(vec![
            Term::from(eetf::Atom::from("$gen_cast")),
            Term::from(eetf::Atom::from("hello")),
        ]));
        assert!(matches!(classify(cast), GenMessage::Cast(_)));
        assert!(matches!(
            classify(Term::from(eetf::Atom::from("x"))),
            GenMessage::Info(_)
        ));
        // A call whose From is not {Pid, Tag} cannot be answered.
        let bad = Term::from(Tuple::from(vec![
            Term::from(eetf::Atom::from("$gen_call")),
            Term::from(eetf::Atom::from("nobody")),
            Term::from(eetf::Atom::from("ping")),
        ]));
        assert!(matches!(classify(bad), GenMessage::Info(_)));
    }
}
