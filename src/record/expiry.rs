//! Expiry handlers: the processes that destroy expired records through Ash.
//!
//! A process becomes a handler with the `subscribe` request (of every resource, or of a list);
//! the node monitors it. When a record expires, one handler of its resource (round-robin) gets
//! an `{ash_gen_server, expired, Info}` notice and is
//! expected to destroy the record. If the handler dies first — or disconnects — every record
//! waiting on it is told, and removes itself; if there is no handler at all, the record removes
//! itself at once. Either way the node logs it.

use crate::node::Node;
use crate::term::{Atom, Pid, Ref, Value, atoms};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

/// Who acts when a record expires. Without one, the node does (a single node). A cluster
/// member lets only the leader act, and has an expired record without a handler removed on
/// every replica alike (through the cluster's log) instead of on its own.
pub trait ExpiryAuthority: Send + Sync {
    /// Whether this node acts on expiries now; when not, the record checks again later.
    fn acts(&self) -> bool;
    /// Removes the expired record `pk` of `resource` (of `tenant`) everywhere.
    fn remove(&self, resource: Atom, tenant: Option<Value>, pk: Value);
}

/// How long a record whose node does not act on expiries waits before it checks again.
pub const EXPIRY_RECHECK_MS: u64 = 1_000;

struct Handler<T> {
    pid: Pid,
    monitor: Ref,
    /// The resources it handles; `None` for all.
    resources: Option<Vec<Atom>>,
    waiting: Vec<Weak<T>>,
}

/// The node's expiry handlers, and the records `T` (their actors) waiting on each.
pub struct Expiry<T> {
    handlers: Mutex<Vec<Handler<T>>>,
    next: AtomicUsize,
    unhandled: Mutex<Unhandled>,
}

impl<T> Default for Expiry<T> {
    fn default() -> Self {
        Expiry {
            handlers: Mutex::default(),
            next: AtomicUsize::default(),
            unhandled: Mutex::default(),
        }
    }
}

/// Records removed without a handler since the last log line, per resource.
#[derive(Default)]
struct Unhandled {
    counts: Vec<(Atom, u64)>,
    logged_at: Option<u64>,
}

/// At most one summary line per this many milliseconds.
const UNHANDLED_LOG_EVERY_MS: u64 = 1_000;

impl<T> Expiry<T> {
    /// Makes `pid` a handler of `resources` (all when `None`), monitored by `owner` on `node`.
    /// Subscribing again replaces the resources.
    pub fn subscribe(&self, node: &Arc<Node>, owner: &Pid, pid: Pid, resources: Option<Vec<Atom>>) {
        let mut handlers = self.handlers.lock();
        if let Some(existing) = handlers.iter_mut().find(|h| h.pid == pid) {
            existing.resources = resources;
            return;
        }
        // A handler already gone fires its monitor later, on another task: no deadlock here.
        let monitor = node.monitor(owner, &pid);
        tracing::info!(handler = %pid, ?resources, "expiry handler subscribed");
        handlers.push(Handler {
            pid,
            monitor,
            resources,
            waiting: Vec::new(),
        });
    }

    /// Stops `pid` being a handler (`owner` stops monitoring it). Returns the records it was
    /// handling: they are to remove themselves.
    pub fn unsubscribe(&self, node: &Arc<Node>, owner: &Pid, pid: &Pid) -> Vec<Arc<T>> {
        let removed = self.take(|h| &h.pid == pid);
        for h in &removed {
            node.demonitor(owner, &h.pid, &h.monitor);
        }
        Self::orphans(removed)
    }

    /// The live handlers, each with its resources (`None` for all).
    pub fn handlers(&self) -> Vec<(Pid, Option<Vec<Atom>>)> {
        self.handlers
            .lock()
            .iter()
            .map(|h| (h.pid, h.resources.clone()))
            .collect()
    }

    /// Number of live handlers.
    pub fn count(&self) -> usize {
        self.handlers.lock().len()
    }

    /// Sends `notice` about a record of `resource` to the next handler of that resource and
    /// notes that `actor` waits on it. Returns false when no handler takes the resource.
    pub fn notify(&self, node: &Arc<Node>, resource: Atom, actor: &Arc<T>, notice: &Value) -> bool {
        let mut handlers = self.handlers.lock();
        let eligible: Vec<usize> = (0..handlers.len())
            .filter(|&i| {
                handlers[i]
                    .resources
                    .as_ref()
                    .is_none_or(|rs| rs.contains(&resource))
            })
            .collect();
        if eligible.is_empty() {
            return false;
        }
        let i = eligible[self.next.fetch_add(1, Ordering::Relaxed) % eligible.len()];
        let handler = &mut handlers[i];
        if handler.waiting.len() >= 64 && handler.waiting.len().is_power_of_two() {
            handler.waiting.retain(|w| w.strong_count() > 0);
        }
        handler.waiting.push(Arc::downgrade(actor));
        node.send(&handler.pid, notice)
    }

    /// Logs a record that expired with no handler for its resource, so the node removed it
    /// without a destroy action. The first one is logged; then one summary line per second
    /// counts the rest (each record, with its values, is logged at debug level only).
    pub fn unhandled(&self, resource: Atom, record: &crate::term::Record, reason: Atom, now: u64) {
        tracing::debug!(%resource, ?record, %reason, "expired with no expiry handler; removed");
        let mut u = self.unhandled.lock();
        match u.logged_at {
            None => {
                tracing::warn!(
                    %resource, %reason,
                    "record expired with no expiry handler subscribed: the node removed it itself, \
                     no destroy action ran"
                );
                u.logged_at = Some(now);
                return;
            }
            Some(_) => match u.counts.iter_mut().find(|(r, _)| *r == resource) {
                Some((_, n)) => *n += 1,
                None => u.counts.push((resource, 1)),
            },
        }
        Self::flush(&mut u, now);
    }

    /// Writes the pending summary of unhandled expiries if a second has passed (the node calls
    /// this every second, so a burst is always reported).
    pub fn flush_log(&self, now: u64) {
        Self::flush(&mut self.unhandled.lock(), now);
    }

    fn flush(u: &mut Unhandled, now: u64) {
        if u.counts.is_empty()
            || u.logged_at
                .is_some_and(|t| now.saturating_sub(t) < UNHANDLED_LOG_EVERY_MS)
        {
            return;
        }
        for (resource, n) in u.counts.drain(..) {
            tracing::warn!(
                %resource, count = n,
                "records expired with no expiry handler subscribed: the node removed them itself, \
                 no destroy action ran"
            );
        }
        u.logged_at = Some(now);
    }

    /// A handler's monitor fired: it exited, or its node disconnected (`noconnection`). Returns
    /// the records it was handling: they are to remove themselves.
    pub fn handler_down(&self, pid: &Pid, monitor: &Ref, reason: &Value) -> Vec<Arc<T>> {
        let removed = self.take(|h| &h.pid == pid && &h.monitor == monitor);
        let disconnected = matches!(reason, Value::Atom(a) if *a == *atoms::NOCONNECTION);
        for h in &removed {
            if disconnected {
                tracing::warn!(handler = %h.pid, "expiry handler's node disconnected");
            } else {
                tracing::warn!(handler = %h.pid, ?reason, "expiry handler died");
            }
        }
        Self::orphans(removed)
    }

    fn take(&self, pred: impl Fn(&Handler<T>) -> bool) -> Vec<Handler<T>> {
        let mut handlers = self.handlers.lock();
        let (gone, kept): (Vec<Handler<T>>, Vec<Handler<T>>) =
            std::mem::take(&mut *handlers).into_iter().partition(pred);
        *handlers = kept;
        gone
    }

    /// The records still waiting on the `removed` handlers.
    fn orphans(removed: Vec<Handler<T>>) -> Vec<Arc<T>> {
        removed
            .iter()
            .flat_map(|handler| handler.waiting.iter().filter_map(Weak::upgrade))
            .collect()
    }
}

/// The notice an expiry handler gets:
/// `{ash_gen_server, expired, #{node, resource, tenant, primary_key, record, reason}}`.
pub fn notice(
    node: crate::term::Atom,
    resource: crate::term::Atom,
    tenant: Option<&Value>,
    primary_key: Value,
    record: &crate::term::Record,
    reason: crate::term::Atom,
) -> Value {
    use crate::term::Atom;
    let key = |s: &'static str| Value::Atom(Atom::from_static(s));
    Value::tuple(vec![
        key("ash_gen_server"),
        key("expired"),
        Value::map(vec![
            (key("node"), Value::Atom(node)),
            (key("resource"), Value::Atom(resource)),
            (key("tenant"), tenant.cloned().unwrap_or_else(Value::nil)),
            (key("primary_key"), primary_key),
            (key("record"), record.to_value()),
            (key("reason"), Value::Atom(reason)),
        ]),
    ])
}
