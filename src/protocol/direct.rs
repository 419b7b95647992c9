//! A record's own pid: the process the node delivers to when someone calls, casts to, links to
//! or sends an exit signal to a record directly (after `whereis`).
//!
//! It answers `get`, `{update, Changes}`, `{update, Changes, #{filter => F}}`, `destroy` and
//! `keep_alive` (docs/PROTOCOL.md, "A record's own process"), each in the record's actor's turn.
//! If the record is gone by then, the caller's monitor reports it (`noproc`), as for any dead
//! process: nothing is replied.
//!
//! A server started with [`super::service::Options::pid_requests_to`] (a cluster member's
//! record service) passes them on instead, as the same requests by resource and key, to that
//! process (the member's router: writes go through the log), and relays the answer; the pid's
//! exit waits for it (a `destroy`'s caller gets `ok` before its monitor's `'DOWN'`).

use super::args;
use super::caller::Caller;
use super::error::{Error, Result, bad};
use super::reply;
use super::service::PassTo;
use crate::node::genserver::{self, From, GenMessage};
use crate::node::{Mailbox, Node, Process};
use crate::query::expr::Atomics;
use crate::query::filter::Expr;
use crate::record::{Envelope, Host, Op, Outcome, RecordActor, RecordService, Reply, Resource};
use crate::term::{Pid, Record, Value};
use std::sync::Arc;
use std::time::Duration;

/// How long a passed-on request may take (a cluster router waits up to 10 s for a leader and
/// 30 s for a forwarded request).
const PASS_ON_TIMEOUT: Duration = Duration::from_secs(60);

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

/// `request`, a valid request to a record's pid, as the same request to `ash_gen_server` for
/// the record `pk` of `resource` (`get` is `{get, Resource, PK}`, `{update, Changes, Opts}` is
/// `{update, Resource, PK, Changes, Opts}`, ...).
fn by_key(request: &Value, resource: Value, pk: Value) -> Value {
    match request {
        Value::Tuple(items) => {
            let mut by_key = vec![items[0].clone(), resource, pk];
            by_key.extend(items[1..].iter().cloned());
            Value::tuple(by_key)
        }
        name => Value::tuple(vec![name.clone(), resource, pk]),
    }
}

/// The process behind a record's pid.
pub struct RecordProcess {
    actor: Arc<RecordActor>,
    pid: Pid,
    records: Arc<RecordService>,
    pass_to: PassTo,
}

impl RecordProcess {
    /// The process for `actor`'s pid `pid`: it serves the requests itself, or passes them on
    /// to the process registered as `pass_to`.
    pub fn spawned(
        actor: Arc<RecordActor>,
        pid: Pid,
        records: Arc<RecordService>,
        pass_to: PassTo,
    ) -> Arc<dyn Process> {
        Arc::new(RecordProcess {
            actor,
            pid,
            records,
            pass_to,
        })
    }

    /// Passes the call `request` on to `to` as the same request by resource and key, and
    /// relays the answer to `from`; the pid's exit waits for it.
    fn pass_on(&self, node: &Arc<Node>, from: From, request: &Value, to: &'static str) {
        let Some(pk) = self.actor.pk() else {
            return; // gone: the caller's monitor says so, as for a call served here
        };
        let request = by_key(request, self.actor.resource.ref_term(), pk);
        self.records.hold_exit(self.pid);
        let (node, records, pid) = (node.clone(), self.records.clone(), self.pid);
        tokio::spawn(async move {
            let reply = match Mailbox::new(&node).call(to, request, PASS_ON_TIMEOUT).await {
                Ok(reply) => reply,
                Err(e) => Error::Unavailable(format!("{to} did not answer: {e}")).to_reply(),
            };
            node.reply(&from, &reply);
            records.release_exit(&pid);
        });
    }
}

impl Process for RecordProcess {
    fn deliver(&self, node: &Arc<Node>, _from: Option<Pid>, message: Value) {
        match genserver::classify(message) {
            GenMessage::Call(from, request) => {
                match (DirectRequest::parse(&request), self.pass_to.get().copied()) {
                    (Ok(_), Some(to)) => self.pass_on(node, from, &request, to),
                    (Ok(parsed), None) => {
                        let op = parsed.op().bound(&self.actor.resource.config().types);
                        self.actor.deliver(
                            &*self.records,
                            Envelope::Call(
                                Some(Box::new(DirectReply(Caller::new(from, "direct")))),
                                op,
                            ),
                        )
                    }
                    (Err(e), _) => node.reply(&from, &e.to_reply()),
                }
            }
            GenMessage::Cast(request) => {
                if let Ok(DirectRequest::KeepAlive) = DirectRequest::parse(&request) {
                    match self.pass_to.get().copied() {
                        None => self
                            .actor
                            .deliver(&*self.records, Envelope::Call(None, Op::KeepAlive)),
                        Some(to) => {
                            if let (Some(pk), Some(server)) = (self.actor.pk(), node.whereis(to)) {
                                let request = by_key(&request, self.actor.resource.ref_term(), pk);
                                node.send(&server, &genserver::cast_message(request));
                            }
                        }
                    }
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
    fn passed_on_requests_name_the_record() {
        let (r, pk) = (term("{post, <<\"t1\">>}"), term("#{id => 7}"));
        assert_eq!(
            by_key(&term("get"), r.clone(), pk.clone()),
            term("{get, {post, <<\"t1\">>}, #{id => 7}}")
        );
        assert_eq!(
            by_key(&term("{update, #{n => 1}}"), r.clone(), pk.clone()),
            term("{update, {post, <<\"t1\">>}, #{id => 7}, #{n => 1}}")
        );
        assert_eq!(
            by_key(
                &term("{update, #{n => 1}, #{filter => nil}}"),
                term("post"),
                pk.clone()
            ),
            term("{update, post, #{id => 7}, #{n => 1}, #{filter => nil}}")
        );
        assert_eq!(
            by_key(&term("destroy"), term("post"), pk),
            term("{destroy, post, #{id => 7}}")
        );
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
