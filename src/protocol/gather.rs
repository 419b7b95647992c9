//! Requests that fan out to many records' actors and answer once every result is in: a
//! [`Gather`] collects one [`Outcome`] per slot, in the order the slots were made, and builds
//! the reply from all of them.

use crate::protocol::caller::Caller;
use crate::record::{Host, Op, Outcome, Reply, Resource, StoreError};
use crate::term::Value;
use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Builds the reply from the outcomes, slot by slot.
pub type Finish = Box<dyn FnOnce(Vec<Outcome>) -> Value + Send>;

/// Outcomes of a fanned-out request, gathered until the last one.
pub struct Gather {
    from: Caller,
    outcomes: Mutex<Vec<Option<Outcome>>>,
    remaining: AtomicUsize,
    finish: Mutex<Option<Finish>>,
}

impl Gather {
    /// A gathering of `n` outcomes for the caller `from` (`n > 0`).
    pub fn new(from: Caller, n: usize, finish: Finish) -> Arc<Gather> {
        Arc::new(Gather {
            from,
            outcomes: Mutex::new((0..n).map(|_| None).collect()),
            remaining: AtomicUsize::new(n),
            finish: Mutex::new(Some(finish)),
        })
    }

    /// Where the outcome of slot `i` goes.
    pub fn slot(self: &Arc<Self>, i: usize) -> Box<Slot> {
        Box::new(Slot(self.clone(), i))
    }

    fn put(&self, svc: &dyn Host, i: usize, outcome: Outcome) {
        self.outcomes.lock()[i] = Some(outcome);
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            let outcomes = std::mem::take(&mut *self.outcomes.lock())
                .into_iter()
                .map(|o| o.unwrap_or(Outcome::Error(StoreError::NotFound)))
                .collect();
            if let Some(finish) = self.finish.lock().take() {
                self.from.reply(svc.node(), &finish(outcomes));
            }
        }
    }
}

/// One slot of a [`Gather`].
pub struct Slot(Arc<Gather>, usize);

impl Reply for Slot {
    fn send(self: Box<Self>, svc: &dyn Host, outcome: Outcome) {
        self.0.put(svc, self.1, outcome);
    }

    fn gone(self: Box<Self>, svc: &dyn Host, resource: &Arc<Resource>, op: Op) {
        match op {
            Op::Upsert(args) => svc.upsert(resource, *args, Some(self)),
            _ => self.send(svc, Outcome::Error(StoreError::NotFound)),
        }
    }
}
