//! The caller of a request, and the request metrics: every reply to a caller goes through
//! [`Caller`], which counts it by request kind and result and times it
//! (`ash_gen_server_requests_total{kind, result}`,
//! `ash_gen_server_request_duration_seconds{kind}`) once [`record_metrics`] has turned them on
//! (the metrics endpoint does, `--metrics-addr`); without it a request costs no clock reading
//! and no metrics key.

use crate::node::Node;
use crate::node::genserver::From;
use crate::term::{Value, atoms};
use crate::wire::etf::TermWriter;
use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Whether request metrics are recorded (a metrics recorder is installed).
static RECORDING: AtomicBool = AtomicBool::new(false);

/// Turns the request metrics on (`true`) or off: called when a metrics recorder is installed.
/// Off, as by default, replies record nothing (there is nobody to record them for).
pub fn record_metrics(on: bool) {
    RECORDING.store(on, Ordering::Relaxed);
}

/// Who waits for a request's reply: the `gen_server` caller, with what it asked and when.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Where the reply goes.
    pub from: From,
    /// The request's kind (`get`, `query`...), for metrics.
    pub kind: &'static str,
    /// When a record the request creates is born (Unix milliseconds), when it is not now: a
    /// cluster member applying its log passes the leader's time (see [`AT_TAG`]).
    pub born_wall: Option<i64>,
    /// When it was received, if request metrics are recorded.
    started: Option<Instant>,
}

/// A call `{'$at', UnixMs, Request}` serves `Request` as if made at `UnixMs` (the records it
/// creates are born then): how a cluster member applies its replicated log, so every replica
/// and every replay after a restart gives a record the same creation time.
pub const AT_TAG: &str = "$at";

impl Deref for Caller {
    type Target = From;
    fn deref(&self) -> &From {
        &self.from
    }
}

impl Caller {
    /// The caller `from` of a request of `kind`, received now.
    pub fn new(from: From, kind: &'static str) -> Caller {
        Caller {
            from,
            kind,
            born_wall: None,
            started: RECORDING.load(Ordering::Relaxed).then(Instant::now),
        }
    }

    /// Sends `reply`.
    pub fn reply(&self, node: &Arc<Node>, reply: &Value) {
        let ok = !matches!(reply.as_tuple(), Some([Value::Atom(a), _]) if *a == *atoms::ERROR);
        node.reply(&self.from, reply);
        self.done(ok);
    }

    /// Sends the reply `body` writes (`ok` tells how it went, for metrics).
    pub fn reply_with(&self, node: &Arc<Node>, ok: bool, body: impl FnMut(&mut TermWriter)) {
        node.reply_with(&self.from, body);
        self.done(ok);
    }

    fn done(&self, ok: bool) {
        let Some(started) = self.started else {
            return;
        };
        let result = if ok { "ok" } else { "error" };
        metrics::counter!("ash_gen_server_requests_total", "kind" => self.kind, "result" => result)
            .increment(1);
        metrics::histogram!("ash_gen_server_request_duration_seconds", "kind" => self.kind)
            .record(started.elapsed().as_secs_f64());
    }
}
