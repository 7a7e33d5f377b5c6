//! Linearizability of single-key histories: the Wing–Gong search with Lowe's memoization
//! (the algorithm of Porcupine and Knossos), run per key since keys are independent.
//!
//! Its own crate, free of any runtime, so that the simulator and the real-process tests
//! check their histories with the same code.
//!
//! Values are interned to small integers so a search state is `(set of linearized ops,
//! value)`. An operation that timed out returns at infinity: it may take effect at any point
//! after its call, or never (linearizing it last is the same as never).

use std::collections::{BTreeMap, HashSet};
use std::hash::BuildHasherDefault;

use xxhash_rust::xxh3::Xxh3;

/// A single-key operation, as the linearizability checker models it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvInput {
    /// Set the value.
    Put(Vec<u8>),
    /// Read the value.
    Get,
    /// Remove the key.
    Delete,
    /// If the value equals `expect` (None: the key is absent), set `new`; else read.
    Cas {
        /// Expected value.
        expect: Option<Vec<u8>>,
        /// Value to set.
        new: Vec<u8>,
    },
}

/// What a completed operation returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvOutput {
    /// Put or delete done.
    Done,
    /// The value read.
    Value(Option<Vec<u8>>),
    /// Whether the compare held, and the value read when it did not.
    Cas(bool, Option<Vec<u8>>),
}

/// One client operation on one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvOp {
    /// Client that issued it.
    pub client: u64,
    /// The key.
    pub key: Vec<u8>,
    /// What it asked.
    pub input: KvInput,
    /// When it was invoked (nanoseconds on the recorder's clock).
    pub call: u64,
    /// When it returned; None if it timed out (it may or may not have taken effect).
    pub ret: Option<u64>,
    /// What it returned (None when `ret` is None).
    pub output: Option<KvOutput>,
}

/// Search steps allowed per key before giving up (reported as a violation: unchecked is
/// not passed).
const STEP_BUDGET: u64 = 20_000_000;

/// Value id 0 is "absent".
type Value = u32;

#[derive(Debug, Clone, Copy)]
enum Input {
    Put(Value),
    Get,
    Delete,
    Cas { expect: Value, new: Value },
}

#[derive(Debug, Clone, Copy)]
enum Output {
    Unknown,
    Done,
    Value(Value),
    Cas(bool, Value),
}

fn step(state: Value, input: Input, output: Output) -> Option<Value> {
    match (input, output) {
        (Input::Put(v), _) => Some(v),
        (Input::Delete, _) => Some(0),
        (Input::Get, Output::Value(v)) => (v == state).then_some(state),
        (Input::Get, _) => Some(state),
        (Input::Cas { expect, new }, Output::Unknown) => Some(if state == expect { new } else { state }),
        (Input::Cas { expect, new }, Output::Cas(true, _)) => (state == expect).then_some(new),
        (Input::Cas { expect, .. }, Output::Cas(false, seen)) => (state != expect && seen == state).then_some(state),
        (Input::Cas { .. }, _) => None,
    }
}

#[derive(Default)]
struct Interner(BTreeMap<Vec<u8>, Value>);

impl Interner {
    fn id(&mut self, v: &Option<Vec<u8>>) -> Value {
        match v {
            None => 0,
            Some(bytes) => {
                let next = self.0.len() as Value + 1;
                *self.0.entry(bytes.clone()).or_insert(next)
            }
        }
    }
}

struct Entry {
    op: usize,
    is_call: bool,
    prev: usize,
    next: usize,
}

/// Why a key's history is not linearizable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The key.
    pub key: Vec<u8>,
    /// What went wrong.
    pub detail: String,
}

/// Checks every key's history; returns the first failure of each key.
pub fn check(ops: &[KvOp]) -> Vec<Failure> {
    let mut by_key: BTreeMap<&[u8], Vec<&KvOp>> = BTreeMap::new();
    for op in ops {
        by_key.entry(&op.key).or_default().push(op);
    }
    by_key
        .into_iter()
        .filter_map(|(key, ops)| check_key(&ops).err().map(|detail| Failure { key: key.to_vec(), detail }))
        .collect()
}

fn check_key(ops: &[&KvOp]) -> Result<(), String> {
    let mut values = Interner::default();
    let model: Vec<(Input, Output)> = ops
        .iter()
        .map(|op| {
            let input = match &op.input {
                KvInput::Put(v) => Input::Put(values.id(&Some(v.clone()))),
                KvInput::Get => Input::Get,
                KvInput::Delete => Input::Delete,
                KvInput::Cas { expect, new } => {
                    Input::Cas { expect: values.id(expect), new: values.id(&Some(new.clone())) }
                }
            };
            let output = match &op.output {
                None => Output::Unknown,
                Some(KvOutput::Done) => Output::Done,
                Some(KvOutput::Value(v)) => Output::Value(values.id(v)),
                Some(KvOutput::Cas(ok, seen)) => Output::Cas(*ok, values.id(seen)),
            };
            (input, output)
        })
        .collect();
    // Events sorted by time; at equal times calls come first (touching ops overlap).
    let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(ops.len() * 2);
    for (i, op) in ops.iter().enumerate() {
        events.push((op.call, false, i));
        events.push((op.ret.unwrap_or(u64::MAX), true, i));
    }
    events.sort();
    // A doubly linked list with a sentinel at 0.
    let mut list: Vec<Entry> = vec![Entry { op: usize::MAX, is_call: false, prev: 0, next: 1 }];
    let mut ret_of = vec![0; ops.len()];
    for (pos, &(_, is_ret, op)) in events.iter().enumerate() {
        let at = pos + 1;
        list.push(Entry { op, is_call: !is_ret, prev: at - 1, next: at + 1 });
        if is_ret {
            ret_of[op] = at;
        }
    }
    let end = list.len();
    list.last_mut().expect("sentinel").next = end;
    let words = ops.len().div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut memo: HashSet<(Vec<u64>, Value), BuildHasherDefault<Xxh3>> = HashSet::default();
    let mut stack: Vec<(usize, Value)> = Vec::new();
    let mut state: Value = 0;
    let mut entry = list[0].next;
    let mut steps = 0u64;
    let mut deepest = 0;
    let unlink = |list: &mut Vec<Entry>, at: usize| {
        let (p, n) = (list[at].prev, list[at].next);
        list[p].next = n;
        if n < end {
            list[n].prev = p;
        }
    };
    let relink = |list: &mut Vec<Entry>, at: usize| {
        let (p, n) = (list[at].prev, list[at].next);
        list[p].next = at;
        if n < end {
            list[n].prev = at;
        }
    };
    while list[0].next != end {
        steps += 1;
        if steps > STEP_BUDGET {
            return Err(format!("search gave up after {STEP_BUDGET} steps ({} ops)", ops.len()));
        }
        if entry == end {
            return Err("search ran off the end of the history".into());
        }
        if list[entry].is_call {
            let op = list[entry].op;
            let (input, output) = model[op];
            if let Some(next_state) = step(state, input, output) {
                linearized[op / 64] |= 1 << (op % 64);
                if memo.insert((linearized.clone(), next_state)) {
                    stack.push((entry, state));
                    deepest = deepest.max(stack.len());
                    state = next_state;
                    unlink(&mut list, entry);
                    unlink(&mut list, ret_of[op]);
                    entry = list[0].next;
                    continue;
                }
                linearized[op / 64] &= !(1 << (op % 64));
            }
            entry = list[entry].next;
        } else {
            let Some((call_entry, prev_state)) = stack.pop() else {
                let stuck = ops[list[entry].op];
                return Err(format!(
                    "no linearization: client {} {:?} -> {:?} (called at {:.3}s) cannot be placed; {} of {} ops linearized at most",
                    stuck.client,
                    stuck.input,
                    stuck.output,
                    stuck.call as f64 / 1e9,
                    deepest,
                    ops.len()
                ));
            };
            let op = list[call_entry].op;
            state = prev_state;
            linearized[op / 64] &= !(1 << (op % 64));
            relink(&mut list, ret_of[op]);
            relink(&mut list, call_entry);
            entry = list[call_entry].next;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(client: u64, input: KvInput, call: u64, ret: Option<u64>, output: Option<KvOutput>) -> KvOp {
        KvOp { client, key: b"k".to_vec(), input, call, ret, output }
    }

    fn put(v: &str) -> KvInput {
        KvInput::Put(v.into())
    }

    fn read(v: Option<&str>) -> Option<KvOutput> {
        Some(KvOutput::Value(v.map(Into::into)))
    }

    #[test]
    fn concurrent_history_is_accepted() {
        let ops = vec![
            op(1, put("a"), 0, Some(10), Some(KvOutput::Done)),
            op(2, put("b"), 5, Some(15), Some(KvOutput::Done)),
            op(3, KvInput::Get, 12, Some(20), read(Some("a"))),
            op(1, KvInput::Get, 21, Some(25), read(Some("a"))),
        ];
        assert!(check(&ops).is_empty());
    }

    #[test]
    fn stale_read_is_caught() {
        let ops = vec![
            op(1, put("a"), 0, Some(10), Some(KvOutput::Done)),
            op(2, put("b"), 11, Some(15), Some(KvOutput::Done)),
            op(3, KvInput::Get, 16, Some(20), read(Some("a"))),
        ];
        let failures = check(&ops);
        assert_eq!(failures.len(), 1, "{failures:?}");
    }

    #[test]
    fn lost_acknowledged_write_is_caught_but_timed_out_write_may_vanish() {
        let lost =
            vec![op(1, put("a"), 0, Some(10), Some(KvOutput::Done)), op(2, KvInput::Get, 20, Some(30), read(None))];
        assert_eq!(check(&lost).len(), 1);
        let vanished = vec![op(1, put("a"), 0, None, None), op(2, KvInput::Get, 20, Some(30), read(None))];
        assert!(check(&vanished).is_empty());
        let late = vec![
            op(1, put("a"), 0, None, None),
            op(2, KvInput::Get, 20, Some(30), read(None)),
            op(2, KvInput::Get, 40, Some(50), read(Some("a"))),
        ];
        assert!(check(&late).is_empty());
    }

    #[test]
    fn compare_and_swap_semantics() {
        let cas = |expect: Option<&str>, new: &str| KvInput::Cas { expect: expect.map(Into::into), new: new.into() };
        let ok = vec![
            op(1, cas(None, "a"), 0, Some(10), Some(KvOutput::Cas(true, None))),
            op(2, cas(None, "b"), 11, Some(20), Some(KvOutput::Cas(false, Some("a".into())))),
            op(1, cas(Some("a"), "c"), 21, Some(30), Some(KvOutput::Cas(true, None))),
        ];
        assert!(check(&ok).is_empty());
        let double_win = vec![
            op(1, cas(None, "a"), 0, Some(10), Some(KvOutput::Cas(true, None))),
            op(2, cas(None, "b"), 0, Some(10), Some(KvOutput::Cas(true, None))),
        ];
        assert_eq!(check(&double_win).len(), 1);
    }

    #[test]
    fn thousands_of_operations_stay_fast() {
        // 8 clients, 2000 ops, heavy overlap and some timeouts.
        let mut ops = Vec::new();
        let mut last = None::<String>;
        for i in 0..2000u64 {
            let t = i * 10;
            let client = i % 8;
            if i % 3 == 0 {
                let v = format!("v{i}");
                let timed_out = i % 97 == 0;
                let (ret, out) = if timed_out { (None, None) } else { (Some(t + 40), Some(KvOutput::Done)) };
                ops.push(op(client, put(&v), t, ret, out));
                last = Some(v);
            } else {
                ops.push(op(client, KvInput::Get, t + 45, Some(t + 48), read(last.as_deref())));
            }
        }
        assert!(check(&ops).is_empty());
    }
}
