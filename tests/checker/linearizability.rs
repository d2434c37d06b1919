//! A linearizability checker for histories of reads and writes on a map of
//! registers, in the manner of Wing & Gong with Lowe's memoisation: each key
//! is checked on its own (linearizability is compositional), by searching
//! for an order of the operations that respects real time (an operation
//! that returned before another was called comes first) and in which every
//! read returns the value of the last write before it.
//!
//! A write whose outcome is unknown (timed out, connection lost, 5xx) may
//! take effect at any point after it was called, or never. Written values
//! must be unique per key, so a read names the one write it saw.

use std::collections::{BTreeMap, HashSet};

/// What a client did, as it saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Write(String),
    /// The value read (`None`: the key did not exist).
    Read(Option<String>),
}

/// One operation in a history. Times are from one monotonic clock.
#[derive(Clone, Debug)]
pub struct Operation {
    pub client: usize,
    pub key: String,
    pub action: Action,
    /// When it was called.
    pub call: u64,
    /// When it returned with a known outcome; `None` for a write whose
    /// outcome is unknown (it may take effect at any point after `call`).
    pub ret: Option<u64>,
}

/// Why a history is not linearizable.
#[derive(Debug)]
pub struct Violation {
    pub key: String,
    pub operations: usize,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "no linearization of the {} operations on key {:?}",
            self.operations, self.key
        )
    }
}

/// Checks every key of `history`. Reads that failed must be left out (they
/// have no effect); writes that failed in a way that proves they did not
/// happen may be left out too.
pub fn check(history: &[Operation]) -> Result<(), Violation> {
    // An unknown write that no read saw changes nothing a linearization must
    // explain (it may simply never have happened): leaving it out keeps the
    // search from trying every subset of them.
    let read: HashSet<(&str, &str)> = history
        .iter()
        .filter_map(|op| match &op.action {
            Action::Read(Some(v)) => Some((op.key.as_str(), v.as_str())),
            _ => None,
        })
        .collect();
    let mut by_key: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    for op in history {
        if let (Action::Write(v), None) = (&op.action, op.ret) {
            if !read.contains(&(op.key.as_str(), v.as_str())) {
                continue;
            }
        }
        by_key.entry(&op.key).or_default().push(op);
    }
    for (key, ops) in by_key {
        if !Search::new(&ops).run() {
            return Err(Violation {
                key: key.to_string(),
                operations: ops.len(),
            });
        }
    }
    Ok(())
}

struct Search<'a> {
    ops: Vec<&'a Operation>,
    /// Indexes of the known-outcome operations that must be linearized.
    required: usize,
    /// Visited (linearized set, register value) states.
    seen: HashSet<(Vec<u64>, Option<&'a str>)>,
}

impl<'a> Search<'a> {
    fn new(ops: &[&'a Operation]) -> Self {
        let mut ops = ops.to_vec();
        ops.sort_by_key(|op| op.call);
        let required = ops.iter().filter(|op| op.ret.is_some()).count();
        Search {
            ops,
            required,
            seen: HashSet::new(),
        }
    }

    fn run(&mut self) -> bool {
        let mut done = vec![0u64; self.ops.len().div_ceil(64)];
        self.extend(&mut done, None, 0)
    }

    /// Depth-first: tries each operation that may come next.
    fn extend(&mut self, done: &mut Vec<u64>, value: Option<&'a str>, linearized: usize) -> bool {
        if linearized == self.required {
            return true;
        }
        // An operation may come next only if no pending one returned before it was called.
        let horizon = (0..self.ops.len())
            .filter(|&i| !is_set(done, i))
            .filter_map(|i| self.ops[i].ret)
            .min()
            .unwrap_or(u64::MAX);
        for i in 0..self.ops.len() {
            let op = self.ops[i];
            if op.call > horizon {
                break; // sorted by call: none further can come next
            }
            if is_set(done, i) {
                continue;
            }
            let next = match &op.action {
                Action::Write(v) => Some(v.as_str()),
                Action::Read(seen) if seen.as_deref() == value => value,
                Action::Read(_) => continue,
            };
            set(done, i, true);
            let counted = linearized + usize::from(op.ret.is_some());
            if self.seen.insert((done.clone(), next)) && self.extend(done, next, counted) {
                return true;
            }
            set(done, i, false);
        }
        false
    }
}

fn is_set(bits: &[u64], i: usize) -> bool {
    bits[i / 64] & (1 << (i % 64)) != 0
}

fn set(bits: &mut [u64], i: usize, on: bool) {
    if on {
        bits[i / 64] |= 1 << (i % 64);
    } else {
        bits[i / 64] &= !(1 << (i % 64));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(action: Action, call: u64, ret: Option<u64>) -> Operation {
        Operation {
            client: 0,
            key: "k".into(),
            action,
            call,
            ret,
        }
    }
    fn w(v: &str, call: u64, ret: Option<u64>) -> Operation {
        op(Action::Write(v.into()), call, ret)
    }
    fn r(v: Option<&str>, call: u64, ret: u64) -> Operation {
        op(Action::Read(v.map(String::from)), call, Some(ret))
    }

    #[test]
    fn sequential_and_concurrent_histories_pass() {
        let history = [
            r(None, 0, 1),
            w("a", 2, Some(3)),
            r(Some("a"), 4, 5),
            // b and c overlap: either order, and reads during them see either.
            w("b", 6, Some(10)),
            w("c", 7, Some(9)),
            r(Some("c"), 8, 11),
            r(Some("b"), 12, 13),
        ];
        check(&history).expect("linearizable");
    }

    #[test]
    fn a_stale_read_is_found() {
        let history = [w("a", 0, Some(1)), w("b", 2, Some(3)), r(Some("a"), 4, 5)];
        assert!(check(&history).is_err());
    }

    #[test]
    fn a_value_never_written_and_a_lost_write_are_found() {
        assert!(check(&[r(Some("ghost"), 0, 1)]).is_err());
        // An acknowledged write that a later read does not see.
        let lost = [w("a", 0, Some(1)), r(None, 2, 3)];
        assert!(check(&lost).is_err());
    }

    #[test]
    fn reads_must_not_go_back_in_time() {
        // b was seen, then a again: with unique values that is a violation.
        let history = [
            w("a", 0, Some(1)),
            w("b", 2, Some(20)),
            r(Some("b"), 3, 4),
            r(Some("a"), 5, 6),
        ];
        assert!(check(&history).is_err());
    }

    #[test]
    fn an_unknown_write_may_land_late_or_never() {
        let late = [
            w("a", 0, Some(1)),
            w("x", 2, None),
            r(Some("a"), 3, 4),
            r(Some("x"), 50, 51),
        ];
        check(&late).expect("an unknown write may land late");
        let never = [w("a", 0, Some(1)), w("x", 2, None), r(Some("a"), 50, 51)];
        check(&never).expect("an unknown write may never land");
        // But it cannot land before it was called.
        let early = [r(Some("x"), 0, 1), w("x", 2, None)];
        assert!(check(&early).is_err());
    }

    #[test]
    fn keys_are_independent() {
        let mut history = vec![w("a", 0, Some(1)), r(Some("a"), 2, 3)];
        history.push(Operation {
            key: "other".into(),
            ..r(None, 2, 3)
        });
        check(&history).expect("each key on its own");
    }
}
