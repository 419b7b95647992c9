//! `ash-lincheck FILE`: is a history recorded by the cluster tests linearizable?
//!
//! The Erlang suites (`integration/erl/ash_cluster_lib.erl`) record every write and read their
//! clients made while members were killed and restarted, one line per operation:
//!
//! ```text
//! KEY PROCESS w|r VALUE CALLED ANSWERED
//! ```
//!
//! `KEY` names a record, `PROCESS` the client process (its operations never overlap), `VALUE`
//! the sequence number written or read (0: the record was not found), `CALLED` and `ANSWERED`
//! the client's monotonic clock in nanoseconds around the call. A write whose outcome is
//! unknown (an error, a timeout: it may or may not have been applied) has `ANSWERED` `-`: it
//! may take effect at any time after it was called, or never, as Knossos and Porcupine model
//! it (its answer comes after every other event, on a process of its own).
//!
//! Each record is a read/write register checked on its own (linearizability is local) with
//! `todc-utils`' Wing–Gong–Lowe checker. Its search is quick on a linearizable history (a few
//! hundred ms for 10,000 operations) but can take exponential time to prove that one is not;
//! so the common ways to fail are looked for first, and each gives a witness (every value is
//! written once per record, which makes these patterns violations): a read of a value never
//! written, a read answered before the write of its value was called, a read of a value that
//! an acknowledged write had overwritten before the read was called (a stale read, a lost
//! write). A history the checker cannot decide within `--budget SECONDS` (default 60) fails
//! too. Prints one line per record that is not linearizable and a summary; exits 0 when every
//! record's history is linearizable, 1 when one is not (or is undecided), 2 when the file
//! cannot be read.

use std::collections::BTreeMap;
use std::process::ExitCode;
use todc_utils::linearizability::history::{Action, History};
use todc_utils::linearizability::WGLChecker;
use todc_utils::specifications::Specification;

/// An operation on one record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Op {
    /// A read: `None` when called, the value read when answered.
    Read(Option<u64>),
    /// A write of a value.
    Write(u64),
}

/// A record's `seq`, as a register starting at 0 (not found).
struct Register;

impl Specification for Register {
    type State = u64;
    type Operation = Op;

    fn init() -> u64 {
        0
    }

    fn apply(op: &Op, state: &u64) -> (bool, u64) {
        match op {
            Op::Read(Some(v)) => (v == state, *state),
            Op::Read(None) => (false, *state),
            Op::Write(v) => (true, *v),
        }
    }
}

/// One recorded operation.
struct Recorded {
    process: usize,
    op: Op,
    called: u64,
    answered: Option<u64>,
}

fn parse(line: &str) -> Result<(String, Recorded), String> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let [key, process, kind, value, called, answered] = fields[..] else {
        return Err(format!("expected 6 fields: {line:?}"));
    };
    let num = |s: &str| {
        s.parse::<u64>()
            .map_err(|e| format!("{s:?} in {line:?}: {e}"))
    };
    let value = num(value)?;
    let op = match kind {
        "w" => Op::Write(value),
        "r" => Op::Read(Some(value)),
        other => return Err(format!("unknown kind {other:?} in {line:?}")),
    };
    let answered = match answered {
        "-" if kind == "w" => None,
        t => Some(num(t)?),
    };
    let process = num(process)? as usize;
    let called = num(called)?;
    Ok((
        key.to_string(),
        Recorded {
            process,
            op,
            called,
            answered,
        },
    ))
}

/// Whether one record's operations are linearizable.
fn linearizable(ops: &[Recorded]) -> bool {
    // Processes numbered from 0 as the checker wants them; a write with an unknown outcome
    // gets a process of its own (its process went on while it was pending).
    let mut ids: BTreeMap<usize, usize> = BTreeMap::new();
    let mut next = 0;
    let mut events: Vec<(u64, u8, usize, Action<Op>)> = Vec::new();
    let end = ops
        .iter()
        .filter_map(|o| o.answered)
        .max()
        .unwrap_or(0)
        .max(ops.iter().map(|o| o.called).max().unwrap_or(0))
        + 1;
    for o in ops {
        let process = if o.answered.is_some() {
            *ids.entry(o.process).or_insert_with(|| {
                next += 1;
                next - 1
            })
        } else {
            next += 1;
            next - 1
        };
        let call = match o.op {
            Op::Read(_) => Op::Read(None),
            w => w,
        };
        // At equal times calls come before answers: operations that touch are concurrent.
        events.push((o.called, 0, process, Action::Call(call)));
        events.push((
            o.answered.unwrap_or(end),
            1,
            process,
            Action::Response(o.op),
        ));
    }
    events.sort_by_key(|(t, order, process, _)| (*t, *order, *process));
    let actions = events.into_iter().map(|(_, _, p, a)| (p, a)).collect();
    WGLChecker::<Register>::is_linearizable(History::from_actions(actions))
}

/// A pattern that makes a record's history not linearizable, if one is there.
fn witness(ops: &[Recorded]) -> Option<String> {
    let writes: BTreeMap<u64, &Recorded> = ops
        .iter()
        .filter_map(|o| match o.op {
            Op::Write(v) => Some((v, o)),
            Op::Read(_) => None,
        })
        .collect();
    for read in ops {
        let (Op::Read(Some(v)), Some(answered)) = (read.op, read.answered) else {
            continue;
        };
        let (since, why) = if v == 0 {
            (0, "not found")
        } else {
            let Some(write) = writes.get(&v) else {
                return Some(format!("a read of {v}, never written"));
            };
            if write.called > answered {
                return Some(format!(
                    "a read of {v} answered at {answered}, before its write was called at {}",
                    write.called
                ));
            }
            match write.answered {
                Some(t) => (t, "its write acknowledged"),
                None => continue,
            }
        };
        // An acknowledged write called after `v` was in place and answered before the read
        // was called: the read must see it or a later value.
        let overwritten = writes.values().find(|w| {
            w.op != Op::Write(v) && w.called > since && w.answered.is_some_and(|t| t < read.called)
        });
        if let Some(w) = overwritten {
            return Some(format!(
                "a read of {v} ({why} at {since}) called at {}, after the write of {:?} was acknowledged (called at {})",
                read.called, w.op, w.called
            ));
        }
    }
    None
}

/// `ops` without the writes of unknown outcome whose value no read returned. Leaving such a
/// write out changes nothing of the verdict (every value is written once per record): a
/// linearization that applies it has no read between it and the next write (that read would
/// have returned its value), so without it the rest is still one; and the history with it
/// allows it never to take effect. Each one left in doubles what the search may explore, and
/// a client whose calls fail fast while every member is down leaves many.
fn without_unread_unknown_writes(ops: Vec<Recorded>) -> Vec<Recorded> {
    let read: std::collections::BTreeSet<u64> = ops
        .iter()
        .filter_map(|o| match o.op {
            Op::Read(Some(v)) => Some(v),
            _ => None,
        })
        .collect();
    ops.into_iter()
        .filter(|o| !matches!((o.op, o.answered), (Op::Write(v), None) if !read.contains(&v)))
        .collect()
}

/// Whether the record's history is linearizable, within `budget`: `Err` says why not.
fn check(ops: Vec<Recorded>, budget: std::time::Duration) -> Result<(), String> {
    let ops = without_unread_unknown_writes(ops);
    if let Some(why) = witness(&ops) {
        return Err(why);
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(linearizable(&ops));
    });
    match rx.recv_timeout(budget) {
        Ok(true) => Ok(()),
        Ok(false) => Err("no linearization (Wing-Gong-Lowe search)".into()),
        Err(_) => Err(format!("undecided within {budget:?}")),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (budget, path) = match &args[..] {
        [path] => (60, path.clone()),
        [flag, secs, path] if flag == "--budget" && secs.parse::<u64>().is_ok() => {
            (secs.parse().unwrap_or(60), path.clone())
        }
        _ => {
            eprintln!("usage: ash-lincheck [--budget SECONDS] HISTORY_FILE");
            return ExitCode::from(2);
        }
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(budget);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("ash-lincheck: {path}: {e}");
            return ExitCode::from(2);
        }
    };
    let mut keys: BTreeMap<String, Vec<Recorded>> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match parse(line) {
            Ok((key, op)) => keys.entry(key).or_default().push(op),
            Err(e) => {
                eprintln!("ash-lincheck: {path}: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let ops: usize = keys.values().map(Vec::len).sum();
    let records = keys.len();
    let mut bad = 0;
    for (key, record_ops) in keys {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if let Err(why) = check(record_ops, left) {
            println!("not linearizable: record {key}: {why}");
            bad += 1;
        }
    }
    let verdict = if bad == 0 {
        "linearizable"
    } else {
        "NOT linearizable"
    };
    println!("{records} records, {ops} operations: {verdict}");
    if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(lines: &[&str]) -> Vec<Recorded> {
        lines.iter().map(|l| parse(l).unwrap().1).collect()
    }

    #[test]
    fn a_read_of_the_acknowledged_value_is_linearizable() {
        assert!(linearizable(&history(&[
            "k 1 w 1 10 20",
            "k 2 r 1 30 40",
            "k 1 w 2 50 60",
            "k 2 r 2 70 80",
        ])));
    }

    #[test]
    fn a_stale_read_after_an_acknowledged_write_is_not() {
        assert!(!linearizable(&history(&[
            "k 1 w 1 10 20",
            "k 1 w 2 30 40",
            "k 2 r 1 50 60",
        ])));
    }

    #[test]
    fn a_read_concurrent_with_a_write_may_see_either() {
        assert!(linearizable(&history(&[
            "k 1 w 1 10 100",
            "k 2 r 0 20 30",
            "k 3 r 1 40 50"
        ])));
        // But not the new value and then the old one.
        assert!(!linearizable(&history(&[
            "k 1 w 1 10 100",
            "k 2 r 1 20 30",
            "k 3 r 0 40 50"
        ])));
    }

    #[test]
    fn the_witnesses_name_the_common_violations() {
        let budget = std::time::Duration::from_secs(5);
        let stale = history(&["k 1 w 1 10 20", "k 1 w 2 30 40", "k 2 r 1 50 60"]);
        assert!(check(stale, budget)
            .unwrap_err()
            .contains("after the write of Write(2)"));
        let lost = history(&["k 1 w 1 10 20", "k 2 r 0 30 40"]);
        assert!(check(lost, budget).unwrap_err().contains("not found"));
        let future = history(&["k 2 r 1 10 20", "k 1 w 1 30 40"]);
        assert!(check(future, budget)
            .unwrap_err()
            .contains("before its write"));
        let never = history(&["k 2 r 7 10 20"]);
        assert!(check(never, budget).unwrap_err().contains("never written"));
        // Concurrent, or of unknown outcome: no witness, and linearizable.
        let fine = history(&[
            "k 1 w 1 10 100",
            "k 2 r 0 20 30",
            "k 1 w 2 110 -",
            "k 2 r 1 120 130",
        ]);
        assert_eq!(check(fine, budget), Ok(()));
    }

    #[test]
    fn a_write_of_unknown_outcome_may_or_may_not_take_effect() {
        assert!(linearizable(&history(&[
            "k 1 w 1 10 -",
            "k 1 w 2 20 30",
            "k 2 r 2 40 50"
        ])));
        assert!(linearizable(&history(&[
            "k 1 w 1 10 20",
            "k 1 w 2 30 -",
            "k 2 r 1 40 50"
        ])));
        assert!(linearizable(&history(&[
            "k 1 w 1 10 20",
            "k 1 w 2 30 -",
            "k 2 r 2 40 50"
        ])));
        // A lost acknowledged write is not excused by one of unknown outcome.
        assert!(!linearizable(&history(&[
            "k 1 w 1 10 20",
            "k 1 w 2 30 -",
            "k 2 r 0 40 50"
        ])));
    }

    #[test]
    fn unread_writes_of_unknown_outcome_are_left_out_and_read_ones_kept() {
        let ops = history(&[
            "k 1 w 1 10 20",
            "k 1 w 2 30 -",
            "k 1 w 3 40 -",
            "k 2 r 3 50 60",
        ]);
        let kept: Vec<Op> = without_unread_unknown_writes(ops)
            .iter()
            .map(|o| o.op)
            .collect();
        assert_eq!(kept, vec![Op::Write(1), Op::Write(3), Op::Read(Some(3))]);
    }

    #[test]
    fn many_writes_of_unknown_outcome_are_decided_at_once() {
        // A client whose calls failed fast while every member was down: 300 writes of unknown
        // outcome, overlapping everything after them, then the acknowledged last one read.
        let mut lines: Vec<String> = vec!["k 1 w 1 10 20".into()];
        lines.extend((2..302).map(|v| format!("k 1 w {v} {} -", 100 + v)));
        lines.push("k 1 w 302 1000 1010".into());
        lines.push("k 2 r 302 1020 1030".into());
        lines.push("k 3 r 1 15 25".into());
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let budget = std::time::Duration::from_secs(10);
        assert_eq!(check(history(&refs), budget), Ok(()));
        // And a stale read after them is still caught.
        lines.push("k 2 r 1 1040 1050".into());
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        assert!(check(history(&refs), budget).is_err());
    }
}
