//! Record timers: one task and one heap of deadlines for every record on the node.
//!
//! A record does not own a timer. It keeps its creation time and last-touch time, and at most one
//! pending deadline in this heap; touching a record only moves its last-touch time. When a
//! deadline comes due the record's actor gets a `Timer` message and checks its real deadlines:
//! expire now, or schedule the next one. So a busy record costs one wake-up per timeout period,
//! an idle one a single wake-up when it expires, and 100,000 records never mean 100,000 tasks.

use parking_lot::Mutex;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

struct Entry<T> {
    at: u64,
    target: Weak<T>,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}
impl<T> Eq for Entry<T> {}
impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Entry<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.at.cmp(&other.at)
    }
}

/// What [`Timers::now`] reads at start: about 34 years of milliseconds, so a record created
/// long before a restart still has a creation time on this clock.
pub const CLOCK_ORIGIN: u64 = 1 << 40;

/// The node's record timers: deadlines of targets `T` (the records' actors), which the timers
/// hold weakly — a target gone before its deadline is skipped.
pub struct Timers<T> {
    epoch: Instant,
    heap: Mutex<BinaryHeap<Reverse<Entry<T>>>>,
    wake: Notify,
}

impl<T> Default for Timers<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Timers<T> {
    /// No timers yet; the clock starts now.
    pub fn new() -> Timers<T> {
        Timers {
            epoch: Instant::now(),
            heap: Mutex::new(BinaryHeap::new()),
            wake: Notify::new(),
        }
    }

    /// The clock every record time uses, in milliseconds: [`CLOCK_ORIGIN`] at start, so times
    /// before the start (a restored record's creation) can be told too.
    pub fn now(&self) -> u64 {
        CLOCK_ORIGIN + self.epoch.elapsed().as_millis() as u64
    }

    /// Milliseconds since the timers started.
    pub fn uptime(&self) -> u64 {
        self.now() - CLOCK_ORIGIN
    }

    /// Has `target` fired at `at` (node milliseconds; see [`Timers::run`]).
    pub fn schedule(&self, at: u64, target: &Arc<T>) {
        let earliest = {
            let mut heap = self.heap.lock();
            let earlier = heap.peek().is_none_or(|Reverse(e)| at < e.at);
            heap.push(Reverse(Entry {
                at,
                target: Arc::downgrade(target),
            }));
            earlier
        };
        if earliest {
            self.wake.notify_one();
        }
    }

    /// Pending deadlines (stale ones included).
    pub fn pending(&self) -> usize {
        self.heap.lock().len()
    }

    /// Fires due timers, `fire(owner, at, target)` for each, until `owner` (the record
    /// service) is gone.
    pub async fn run<S>(self: Arc<Self>, owner: Weak<S>, fire: impl Fn(&S, u64, &Arc<T>)) {
        let mut due: Vec<(u64, Weak<T>)> = Vec::new();
        loop {
            let now = self.now();
            let next = {
                let mut heap = self.heap.lock();
                while let Some(Reverse(e)) = heap.peek() {
                    if e.at > now {
                        break;
                    }
                    if let Some(Reverse(e)) = heap.pop() {
                        due.push((e.at, e.target));
                    }
                }
                heap.peek().map(|Reverse(e)| e.at)
            };
            if !due.is_empty() {
                let Some(owner) = owner.upgrade() else { return };
                for (at, target) in due.drain(..) {
                    if let Some(target) = target.upgrade() {
                        fire(&owner, at, &target);
                    }
                }
                continue;
            }
            match next {
                Some(at) => {
                    let sleep = tokio::time::sleep_until(
                        (self.epoch + Duration::from_millis(at.saturating_sub(CLOCK_ORIGIN)))
                            .into(),
                    );
                    tokio::select! {
                        _ = sleep => {}
                        _ = self.wake.notified() => {}
                    }
                }
                None => self.wake.notified().await,
            }
        }
    }
}
