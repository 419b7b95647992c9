//! Supervision of record actors: OTP's restart intensity, one supervisor per record.
//!
//! Each record is supervised on its own (as if under a `one_for_one` supervisor with a single
//! transient child), so one record that keeps failing never takes others down with it: when it
//! fails more than `max_restarts` times within `max_seconds`, it is removed instead of restarted.
//! A restart brings the actor back with its last committed record. How an exit reason is
//! treated follows OTP's `transient` restart type: `normal`, `shutdown` and `{shutdown, _}` stop
//! the record for good; anything else is a failure.

use crate::term::{Value, atoms};
use std::collections::VecDeque;

/// Restart intensity: at most `max_restarts` restarts in any `max_seconds` window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Restarts allowed in the window.
    pub max_restarts: u32,
    /// The window, in seconds.
    pub max_seconds: u64,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        // OTP's supervisor defaults are 1 in 5 s; records get a little more slack.
        RestartPolicy {
            max_restarts: 3,
            max_seconds: 5,
        }
    }
}

/// What the supervisor decides after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Start the actor again from its last committed state.
    Restart,
    /// Too many failures: remove the record.
    GiveUp,
}

/// Recent failure times of one record, in milliseconds.
#[derive(Debug, Default, Clone)]
pub struct RestartHistory {
    failures: VecDeque<u64>,
}

impl RestartHistory {
    /// Records a failure at `now_ms` and decides what to do.
    pub fn failed(&mut self, policy: RestartPolicy, now_ms: u64) -> Decision {
        let window = policy.max_seconds.saturating_mul(1000);
        while let Some(&oldest) = self.failures.front() {
            if now_ms.saturating_sub(oldest) >= window {
                self.failures.pop_front();
            } else {
                break;
            }
        }
        self.failures.push_back(now_ms);
        if self.failures.len() as u64 > policy.max_restarts as u64 {
            Decision::GiveUp
        } else {
            Decision::Restart
        }
    }

    /// Failures still inside the window.
    pub fn recent(&self) -> usize {
        self.failures.len()
    }
}

/// Whether an exit with `reason` ends the record without a restart (transient semantics).
pub fn is_clean_exit(reason: &Value) -> bool {
    match reason {
        Value::Atom(a) => *a == *atoms::NORMAL || *a == *atoms::SHUTDOWN,
        Value::Tuple(items) => {
            items.len() == 2 && matches!(&items[0], Value::Atom(a) if *a == *atoms::SHUTDOWN)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::term::Atom;

    #[test]
    fn gives_up_after_max_restarts_within_the_window() {
        let policy = RestartPolicy {
            max_restarts: 2,
            max_seconds: 1,
        };
        let mut h = RestartHistory::default();
        assert_eq!(h.failed(policy, 0), Decision::Restart);
        assert_eq!(h.failed(policy, 100), Decision::Restart);
        assert_eq!(h.failed(policy, 200), Decision::GiveUp);
    }

    #[test]
    fn old_failures_fall_out_of_the_window() {
        let policy = RestartPolicy {
            max_restarts: 1,
            max_seconds: 1,
        };
        let mut h = RestartHistory::default();
        assert_eq!(h.failed(policy, 0), Decision::Restart);
        assert_eq!(h.failed(policy, 1_500), Decision::Restart);
        assert_eq!(h.recent(), 1);
        assert_eq!(h.failed(policy, 1_600), Decision::GiveUp);
    }

    #[test]
    fn zero_restarts_means_the_first_failure_is_final() {
        let policy = RestartPolicy {
            max_restarts: 0,
            max_seconds: 5,
        };
        assert_eq!(
            RestartHistory::default().failed(policy, 0),
            Decision::GiveUp
        );
    }

    #[test]
    fn transient_exit_reasons() {
        let shutdown = Value::Atom(*atoms::SHUTDOWN);
        assert!(is_clean_exit(&Value::Atom(*atoms::NORMAL)));
        assert!(is_clean_exit(&shutdown));
        assert!(is_clean_exit(&Value::tuple(vec![shutdown, Value::Int(1)])));
        assert!(!is_clean_exit(&Value::Atom(*atoms::KILLED)));
        assert!(!is_clean_exit(&Value::Atom(Atom::new("boom").unwrap())));
    }
}
