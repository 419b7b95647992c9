//! A record's own pid: the process the node delivers to when someone calls, casts to, links to
//! or sends an exit signal to a record directly (after `whereis`).
//!
//! It answers `get`, `{update, Changes}`, `{update, Changes, #{filter => F}}`, `destroy` and
//! `keep_alive` (docs/PROTOCOL.md, "A record's own process"), each in the record's actor's turn.
//! If the record is gone by then, the caller's monitor reports it (`noproc`), as for any dead
//! process: nothing is replied.

use super::args;
use super::caller::Caller;
use super::error::{Error, Result, bad};
use super::reply;
use crate::node::genserver::{self, GenMessage};
use crate::node::{Node, Process};
use crate::query::expr::Atomics;
use crate::query::filter::Expr;
use crate::record::{Envelope, Host, Op, Outcome, RecordActor, RecordService, Reply, Resource};
use crate::term::{Pid, Record, Value};
use std::sync::Arc;

/// A request sent straight to a record's pid.
#[derive(Debug)]
pub enum DirectRequest {
    /// `get`.
    Get,
    /// `{update, Changes}` / `{update, Changes, Opts}`: changes, filter, atomics.
    Update(Record, Option<Expr>, Atomics),
    /// `destroy`.
    Destroy,
    /// `keep_alive`.
    KeepAlive,
}

impl DirectRequest {
    /// Parses a request sent to a record's pid.
    pub fn parse(v: &Value) -> Result<DirectRequest> {
        match v {
            Value::Atom(a) => match a.as_str() {
                "get" => Ok(DirectRequest::Get),
                "destroy" => Ok(DirectRequest::Destroy),
                "keep_alive" => Ok(DirectRequest::KeepAlive),
                _ => Err(Error::UnknownRequest(v.clone())),
            },
            Value::Tuple(items) if matches!(items.first(), Some(Value::Atom(a)) if a.as_str() == "update") => {
                match &items[1..] {
                    [changes] => Ok(DirectRequest::Update(
                        args::record(changes, "changes")?,
                        None,
                        Vec::new(),
                    )),
                    [changes, o] => {
                        let (filter, atomics) = args::update_opts(o, "update")?;
                        Ok(DirectRequest::Update(
                            args::record(changes, "changes")?,
                            filter,
                            atomics,
                        ))
                    }
                    _ => bad("update must be {update, Changes} or {update, Changes, Opts}"),
                }
            }
            _ => Err(Error::UnknownRequest(v.clone())),
        }
    }

    fn op(self) -> Op {
        match self {
            DirectRequest::Get => Op::Get,
            DirectRequest::Update(changes, filter, atomics) => Op::Update {
                changes,
                filter,
                atomics,
            },
            DirectRequest::Destroy => Op::Destroy { filter: None },
            DirectRequest::KeepAlive => Op::KeepAlive,
        }
    }
}

/// The process behind a record's pid.
pub struct RecordProcess {
    actor: Arc<RecordActor>,
    records: Arc<RecordService>,
}

impl RecordProcess {
    /// The process for `actor`'s pid.
    pub fn spawned(actor: Arc<RecordActor>, records: Arc<RecordService>) -> Arc<dyn Process> {
        Arc::new(RecordProcess { actor, records })
    }
}

impl Process for RecordProcess {
    fn deliver(&self, node: &Arc<Node>, _from: Option<Pid>, message: Value) {
        match genserver::classify(message) {
            GenMessage::Call(from, request) => match DirectRequest::parse(&request) {
                Ok(parsed) => {
                    let op = parsed.op().bound(&self.actor.resource.config().types);
                    self.actor.deliver(
                        &*self.records,
                        Envelope::Call(
                            Some(Box::new(DirectReply(Caller::new(from, "direct")))),
                            op,
                        ),
                    )
                }
                Err(e) => node.reply(&from, &e.to_reply()),
            },
            GenMessage::Cast(request) => {
                if let Ok(DirectRequest::KeepAlive) = DirectRequest::parse(&request) {
                    self.actor
                        .deliver(&*self.records, Envelope::Call(None, Op::KeepAlive));
                }
            }
            GenMessage::Info(message) => {
                tracing::debug!(?message, "a record process ignored a plain message");
            }
        }
    }

    fn over_limit(&self, node: &Arc<Node>, message: Value, reason: &'static str) {
        reply::refuse_over_limit(node, message, reason);
    }

    fn exit_signal(&self, _node: &Arc<Node>, from: Pid, reason: Value, link: bool) {
        self.actor
            .deliver(&*self.records, Envelope::Exit { from, reason, link });
    }
}

/// Replies to a caller of a record's own pid.
struct DirectReply(Caller);

impl Reply for DirectReply {
    fn send(self: Box<Self>, svc: &dyn Host, outcome: Outcome) {
        reply::send_outcome(svc, &self.0, &outcome);
    }

    fn gone(self: Box<Self>, _svc: &dyn Host, _resource: &Arc<Resource>, _op: Op) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn term(s: &str) -> Value {
        crate::term::parse_term(s).unwrap()
    }

    #[test]
    fn parses_direct_requests() {
        assert!(matches!(
            DirectRequest::parse(&term("get")),
            Ok(DirectRequest::Get)
        ));
        assert!(matches!(
            DirectRequest::parse(&term("{update, #{n => 1}}")),
            Ok(DirectRequest::Update(_, None, _))
        ));
        assert!(matches!(
            DirectRequest::parse(&term("{update, #{n => 1}, #{filter => {eq, n, 0}}}")),
            Ok(DirectRequest::Update(_, Some(_), _))
        ));
        assert!(matches!(
            DirectRequest::parse(&term("destroy")),
            Ok(DirectRequest::Destroy)
        ));
        assert_eq!(
            DirectRequest::parse(&term("nope")).unwrap_err(),
            Error::UnknownRequest(term("nope"))
        );
    }
}
