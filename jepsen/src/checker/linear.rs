//! Linearizability checking with the Wing & Gong algorithm as improved by
//! Lowe (memoizing `(linearized set, model state)` pairs), the algorithm of
//! Knossos' `wgl` and of Porcupine.
//!
//! Semantics (as Knossos): an `ok` op must take effect exactly once between
//! its invoke and its completion; a `fail` op never happened; an `info`
//! (or never-completed) op may take effect at any point after its invoke, or
//! not at all. Reads that did not complete `ok` are dropped (no side effects).
//!
//! The register history is partitioned per key (`value = [key, v]`), keys are
//! checked in parallel on std threads, each with a time limit after which the
//! key is reported `unknown` instead of hanging.

use std::collections::{HashMap, HashSet};
use std::fmt::{Debug, Write as _};
use std::hash::Hash;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{CheckerResult, ToJson, Verdict};
use crate::history::{pair_ops, Op, OpType, Process};
use crate::report::{esc, json_text};

/// A sequential specification.
pub trait Model {
    type State: Clone + Eq + Hash + Debug;
    type Input: Clone + Debug;
    /// The state after applying `op` to `s`, or None if `op` (with its
    /// observed output, part of the input here) is impossible in `s`.
    fn step(&self, s: &Self::State, op: &Self::Input) -> Option<Self::State>;
}

/// One operation for the search: `call`/`ret` are positions in the history's
/// real-time order (history indices). `ret: None` means "may take effect any
/// time after call, or never".
#[derive(Clone, Debug)]
pub struct Entry<I> {
    pub input: I,
    pub call: u64,
    pub ret: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Search {
    Linearizable,
    /// `longest`: indices (into the entries) of the longest partial
    /// linearization found, in linearization order.
    NotLinearizable {
        longest: Vec<usize>,
    },
    Timeout,
}

/// Memo entries after which a search gives up (`unknown`) to bound memory.
const MAX_CACHE: usize = 20_000_000;

#[derive(Clone, Copy)]
struct Node {
    prev: usize,
    next: usize,
    op: usize,
    call: bool,
    partner: usize,
}

/// WGL search. Returns whether some linearization of all required (`ret:
/// Some`) entries, plus any subset of optional ones, is legal in the model.
pub fn wgl<M: Model>(
    model: &M,
    init: M::State,
    ops: &[Entry<M::Input>],
    deadline: Instant,
) -> Search {
    let n = ops.len();
    let required_total = ops.iter().filter(|o| o.ret.is_some()).count();
    if required_total == 0 {
        return Search::Linearizable;
    }
    // Events sorted by time; calls before returns at equal times.
    let mut events: Vec<(u64, u8, usize)> = Vec::with_capacity(2 * n);
    for (i, o) in ops.iter().enumerate() {
        events.push((o.call, 0, i));
        events.push((o.ret.unwrap_or(u64::MAX), 1, i));
    }
    events.sort();
    let head = 0usize;
    let tail = 2 * n + 1;
    let mut nodes =
        vec![Node { prev: 0, next: 0, op: usize::MAX, call: false, partner: 0 }; 2 * n + 2];
    let mut call_node = vec![0usize; n];
    let mut ret_node = vec![0usize; n];
    for (pos, &(_, kind, op)) in events.iter().enumerate() {
        let id = pos + 1;
        nodes[id] = Node { prev: id - 1, next: id + 1, op, call: kind == 0, partner: 0 };
        if kind == 0 {
            call_node[op] = id;
        } else {
            ret_node[op] = id;
        }
    }
    nodes[head].next = 1;
    nodes[tail].prev = 2 * n;
    for op in 0..n {
        nodes[call_node[op]].partner = ret_node[op];
        nodes[ret_node[op]].partner = call_node[op];
    }

    let lift = |nodes: &mut Vec<Node>, e: usize| {
        let m = nodes[e].partner;
        let (p, x) = (nodes[e].prev, nodes[e].next);
        nodes[p].next = x;
        nodes[x].prev = p;
        let (p, x) = (nodes[m].prev, nodes[m].next);
        nodes[p].next = x;
        nodes[x].prev = p;
    };
    let unlift = |nodes: &mut Vec<Node>, e: usize| {
        let m = nodes[e].partner;
        let (p, x) = (nodes[m].prev, nodes[m].next);
        nodes[p].next = m;
        nodes[x].prev = m;
        let (p, x) = (nodes[e].prev, nodes[e].next);
        nodes[p].next = e;
        nodes[x].prev = e;
    };

    let words = n.div_ceil(64);
    let mut bits = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, M::State)> = HashSet::new();
    let mut calls: Vec<(usize, M::State)> = Vec::new();
    let mut longest: Vec<usize> = Vec::new();
    let mut state = init;
    let mut done = 0usize;
    let mut entry = nodes[head].next;
    let mut steps: u64 = 0;

    loop {
        steps += 1;
        if steps & 0xFFF == 0 && (Instant::now() >= deadline || cache.len() > MAX_CACHE) {
            return Search::Timeout;
        }
        if entry != tail && nodes[entry].call {
            let op = nodes[entry].op;
            if let Some(next_state) = model.step(&state, &ops[op].input) {
                bits[op / 64] |= 1 << (op % 64);
                if cache.insert((bits.clone(), next_state.clone())) {
                    calls.push((entry, state));
                    state = next_state;
                    if ops[op].ret.is_some() {
                        done += 1;
                    }
                    if calls.len() > longest.len() {
                        longest = calls.iter().map(|(e, _)| nodes[*e].op).collect();
                    }
                    if done == required_total {
                        return Search::Linearizable;
                    }
                    lift(&mut nodes, entry);
                    entry = nodes[head].next;
                    continue;
                }
                bits[op / 64] &= !(1 << (op % 64));
            }
            entry = nodes[entry].next;
        } else if entry != tail && ops[nodes[entry].op].ret.is_none() {
            // The "return" of an optional op: nothing forces it in.
            entry = nodes[entry].next;
        } else {
            // A required op returned (or the list ended) without being
            // linearized: backtrack.
            let Some((e, s)) = calls.pop() else {
                return Search::NotLinearizable { longest };
            };
            let op = nodes[e].op;
            bits[op / 64] &= !(1 << (op % 64));
            if ops[op].ret.is_some() {
                done -= 1;
            }
            state = s;
            unlift(&mut nodes, e);
            entry = nodes[e].next;
        }
    }
}

// ---------------------------------------------------------------- register

/// Value id 0 is nil; `UNKNOWN` is "any value" (used for windows that start
/// mid-history).
pub const NIL: u32 = 0;
pub const UNKNOWN: u32 = u32::MAX;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegOp {
    Write(u32),
    Read(u32),
}

/// A read/write register.
pub struct Register;

impl Model for Register {
    type State = u32;
    type Input = RegOp;
    fn step(&self, s: &u32, op: &RegOp) -> Option<u32> {
        match *op {
            RegOp::Write(v) => Some(v),
            RegOp::Read(v) if *s == UNKNOWN || *s == v => Some(v),
            RegOp::Read(_) => None,
        }
    }
}

/// One register op of one key, as taken from the history.
#[derive(Clone, Debug)]
pub struct KeyOp {
    pub op: RegOp,
    pub invoke: Op,
    pub complete: Option<Op>,
}

impl KeyOp {
    fn call(&self) -> u64 {
        self.invoke.index
    }
    /// Completion index if the op completed ok.
    fn ok_ret(&self) -> Option<u64> {
        match &self.complete {
            Some(c) if c.typ == OpType::Ok => Some(c.index),
            _ => None,
        }
    }
}

/// Register ops grouped by key, in invoke order.
pub struct KeyHistory {
    pub key: String,
    pub ops: Vec<KeyOp>,
    /// Interned value names, index = value id (0 = nil).
    pub values: Vec<String>,
}

fn key_of(v: &Value) -> Option<(String, Value)> {
    let arr = v.as_array()?;
    if arr.len() != 2 {
        return None;
    }
    let k = match &arr[0] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    Some((k, arr[1].clone()))
}

/// Splits a history into per-key register histories. Reads take their value
/// from the `ok` completion; failed ops are dropped; info/unfinished reads are
/// dropped; info/unfinished writes are kept as optional.
pub fn partition(history: &[Op]) -> Vec<KeyHistory> {
    let mut by_key: HashMap<String, KeyHistory> = HashMap::new();
    let mut order: Vec<String> = Vec::new();
    for pair in pair_ops(history) {
        let inv = pair.invoke;
        if inv.f != "read" && inv.f != "write" {
            continue;
        }
        let Some((key, inv_val)) = key_of(&inv.value) else {
            continue;
        };
        let ctype = pair.complete.map(|c| c.typ).unwrap_or(OpType::Info);
        if ctype == OpType::Fail {
            continue;
        }
        if inv.f == "read" && ctype != OpType::Ok {
            continue;
        }
        let kh = by_key.entry(key.clone()).or_insert_with(|| {
            order.push(key.clone());
            KeyHistory { key: key.clone(), ops: Vec::new(), values: vec!["nil".into()] }
        });
        let val = if inv.f == "read" {
            pair.complete.and_then(|c| key_of(&c.value)).map(|(_, v)| v).unwrap_or(Value::Null)
        } else {
            inv_val
        };
        let id = if val.is_null() {
            NIL
        } else {
            let name = val.to_string();
            match kh.values.iter().position(|v| *v == name) {
                Some(i) => i as u32,
                None => {
                    kh.values.push(name);
                    (kh.values.len() - 1) as u32
                }
            }
        };
        let op = if inv.f == "read" { RegOp::Read(id) } else { RegOp::Write(id) };
        kh.ops.push(KeyOp { op, invoke: inv.clone(), complete: pair.complete.cloned() });
    }
    order.into_iter().filter_map(|k| by_key.remove(&k)).collect()
}

/// Entries of the window [start, end) of a key history: ops invoked before
/// `end`; ops not completed ok before `end` become optional (reads dropped).
/// With `start`, ops completed before it are dropped and ops straddling it
/// become optional writes (reads dropped); the caller then starts from
/// `UNKNOWN`. Both cuts only ever relax constraints, so a failing window
/// proves the whole history non-linearizable.
fn window(kh: &KeyHistory, start: Option<u64>, end: u64) -> (Vec<Entry<RegOp>>, Vec<usize>) {
    let mut entries = Vec::new();
    let mut map = Vec::new();
    for (i, k) in kh.ops.iter().enumerate() {
        if k.call() >= end {
            continue;
        }
        let mut ret = k.ok_ret().filter(|r| *r < end);
        if let Some(s) = start {
            if ret.is_some_and(|r| r < s) {
                continue;
            }
            if k.call() < s {
                ret = None;
            }
        }
        if ret.is_none() && matches!(k.op, RegOp::Read(_)) {
            continue;
        }
        entries.push(Entry { input: k.op, call: k.call(), ret });
        map.push(i);
    }
    (entries, map)
}

/// A compact description of one op for reports.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OpSummary {
    pub index: u64,
    pub process: Process,
    pub f: String,
    /// Written value, or the value read.
    pub value: Value,
    /// ok / info (info also for never completed).
    #[serde(rename = "type")]
    pub typ: String,
    pub invoke_ns: u64,
    pub complete_ns: Option<u64>,
    pub complete_index: Option<u64>,
}

fn summarize(kh: &KeyHistory, i: usize) -> OpSummary {
    let k = &kh.ops[i];
    let value = match k.op {
        RegOp::Write(v) | RegOp::Read(v) => {
            if v == NIL {
                Value::Null
            } else {
                serde_json::from_str(&kh.values[v as usize]).unwrap_or(Value::Null)
            }
        }
    };
    OpSummary {
        index: k.invoke.index,
        process: k.invoke.process,
        f: k.invoke.f.clone(),
        value,
        typ: k.complete.as_ref().map(|c| c.typ.as_str()).unwrap_or("info").to_string(),
        invoke_ns: k.invoke.time,
        complete_ns: k.complete.as_ref().map(|c| c.time),
        complete_index: k.complete.as_ref().map(|c| c.index),
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Anomaly {
    /// The ok op whose completion first makes the key's history
    /// non-linearizable (the end of the smallest failing prefix).
    pub failing_op: OpSummary,
    /// The smallest failing window found: history index range and its ops.
    pub window_start_index: u64,
    pub window_end_index: u64,
    /// "nil" when the window starts at the beginning, else "unknown" (any
    /// initial value was allowed, so the window alone is a proof).
    pub window_initial: String,
    pub window: Vec<OpSummary>,
    /// Longest partial linearization of the window, in linearization order.
    pub longest_linearization: Vec<OpSummary>,
    /// Length of the longest partial linearization of the full key history.
    pub longest_full_len: usize,
}

/// (`serde(default)`: results.json of older runs may lack newer fields.)
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct KeyResult {
    pub key: String,
    pub valid: Verdict,
    pub ops: usize,
    pub optional_ops: usize,
    pub elapsed_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anomaly: Option<Anomaly>,
}

/// Checks one key; on a violation, shrinks to the smallest failing window.
pub fn check_key(kh: &KeyHistory, limit: Duration) -> KeyResult {
    let started = Instant::now();
    let deadline = started + limit;
    let (entries, map) = window(kh, None, u64::MAX);
    let optional_ops = entries.iter().filter(|e| e.ret.is_none()).count();
    let search = wgl(&Register, NIL, &entries, deadline);
    let mut res = KeyResult {
        key: kh.key.clone(),
        valid: Verdict::Valid,
        ops: entries.len(),
        optional_ops,
        elapsed_ms: 0,
        anomaly: None,
    };
    match search {
        Search::Linearizable => {}
        Search::Timeout => res.valid = Verdict::Unknown,
        Search::NotLinearizable { longest } => {
            res.valid = Verdict::Invalid;
            let shrink_deadline = Instant::now() + limit;
            res.anomaly =
                Some(shrink(kh, longest.iter().map(|&i| map[i]).collect(), shrink_deadline));
        }
    }
    res.elapsed_ms = started.elapsed().as_millis() as u64;
    res
}

fn fails(kh: &KeyHistory, start: Option<u64>, end: u64, deadline: Instant) -> Option<Vec<usize>> {
    let (entries, map) = window(kh, start, end);
    let init = if start.is_some() { UNKNOWN } else { NIL };
    match wgl(&Register, init, &entries, deadline) {
        Search::NotLinearizable { longest } => Some(longest.into_iter().map(|i| map[i]).collect()),
        _ => None,
    }
}

fn shrink(kh: &KeyHistory, longest_full: Vec<usize>, deadline: Instant) -> Anomaly {
    // Smallest failing prefix: cut after each ok completion, binary search.
    let mut rets: Vec<(u64, usize)> =
        kh.ops.iter().enumerate().filter_map(|(i, k)| k.ok_ret().map(|r| (r, i))).collect();
    rets.sort();
    let mut hi = rets.len() - 1; // known failing (whole history)
    let mut lo: isize = -1;
    let mut hi_longest = None;
    while (hi as isize) - lo > 1 {
        let mid = ((lo + hi as isize) / 2) as usize;
        match fails(kh, None, rets[mid].0 + 1, deadline) {
            Some(l) => {
                hi = mid;
                hi_longest = Some(l);
            }
            None => lo = mid as isize,
        }
    }
    let end = rets[hi].0 + 1;
    let failing = rets[hi].1;
    // Latest start that still fails with an unknown initial value.
    let mut starts: Vec<u64> = kh.ops.iter().map(|k| k.call()).filter(|c| *c < end).collect();
    starts.sort();
    starts.dedup();
    let mut best_start: Option<u64> = None;
    let mut best_longest = hi_longest.clone();
    let (mut lo, mut hi2) = (0usize, starts.len()); // starts[lo-1] fails (or none), starts[hi2..] unknown
    while lo < hi2 {
        let mid = (lo + hi2) / 2;
        if mid == 0 {
            // start at the very beginning is covered by the prefix check
            lo = 1;
            continue;
        }
        match fails(kh, Some(starts[mid]), end, deadline) {
            Some(l) => {
                best_start = Some(starts[mid]);
                best_longest = Some(l);
                lo = mid + 1;
            }
            None => hi2 = mid,
        }
    }
    let (_, map) = window(kh, best_start, end);
    let longest = best_longest.unwrap_or_else(|| longest_full.clone());
    Anomaly {
        failing_op: summarize(kh, failing),
        window_start_index: best_start.unwrap_or(0),
        window_end_index: end - 1,
        window_initial: if best_start.is_some() { "unknown".into() } else { "nil".into() },
        window: map.iter().map(|&i| summarize(kh, i)).collect(),
        longest_linearization: longest.iter().map(|&i| summarize(kh, i)).collect(),
        longest_full_len: longest_full.len(),
    }
}

/// results.json `linear`. (`serde(default)`: as `KeyResult`.)
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct LinearResult {
    pub valid: Verdict,
    pub model: String,
    pub keys: usize,
    pub valid_keys: usize,
    pub invalid_keys: usize,
    pub unknown_keys: usize,
    pub ops: usize,
    pub elapsed_ms: u64,
    /// Invalid and unknown keys, with their anomalies.
    pub failures: Vec<KeyResult>,
}

/// Checks every key of a register history in parallel.
pub fn check(history: &[Op], threads: usize, per_key_limit: Duration) -> LinearResult {
    let started = Instant::now();
    let keys = partition(history);
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<KeyResult>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(kh) = keys.get(i) else { break };
                let r = check_key(kh, per_key_limit);
                results.lock().unwrap().push(r);
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by(|a, b| a.key.cmp(&b.key));
    let count = |v: Verdict| results.iter().filter(|r| r.valid == v).count();
    let valid = results.iter().fold(Verdict::Valid, |acc, r| acc.merge(r.valid));
    LinearResult {
        valid,
        model: "register".into(),
        keys: results.len(),
        valid_keys: count(Verdict::Valid),
        invalid_keys: count(Verdict::Invalid),
        unknown_keys: count(Verdict::Unknown),
        ops: results.iter().map(|r| r.ops).sum(),
        elapsed_ms: started.elapsed().as_millis() as u64,
        failures: results.into_iter().filter(|r| r.valid != Verdict::Valid).collect(),
    }
}

/// At most this many failing keys are listed in the summary…
const SUMMARY_KEYS: usize = 5;
/// …and this many get a section in report.html (results.json has them all).
const HTML_KEYS: usize = 20;

impl LinearResult {
    /// Invoke indices of the ops in the reported anomaly windows (outlined
    /// in red in the timeline).
    pub fn anomaly_ops(&self) -> HashSet<u64> {
        let windows = self.failures.iter().filter_map(|k| k.anomaly.as_ref());
        windows.flat_map(|a| a.window.iter().map(|o| o.index)).collect()
    }
}

impl CheckerResult for LinearResult {
    fn name(&self) -> &'static str {
        "linear"
    }

    fn verdict(&self) -> Verdict {
        self.valid
    }

    fn summary_line(&self) -> String {
        format!(
            "{} keys: {} valid, {} invalid, {} unknown; {} ops checked in {} ms",
            self.keys,
            self.valid_keys,
            self.invalid_keys,
            self.unknown_keys,
            self.ops,
            self.elapsed_ms
        )
    }

    fn anomaly_lines(&self) -> Vec<String> {
        let line = |kr: &KeyResult| match &kr.anomaly {
            Some(a) => format!(
                "key {}: {} op #{} {} {} not linearizable; window of {} ops (#{}–#{})",
                kr.key,
                a.failing_op.typ,
                a.failing_op.index,
                a.failing_op.f,
                a.failing_op.value,
                a.window.len(),
                a.window_start_index,
                a.window_end_index
            ),
            None => format!("key {}: {}", kr.key, kr.valid.as_str()),
        };
        self.failures.iter().take(SUMMARY_KEYS).map(line).collect()
    }

    fn html_section(&self) -> String {
        let mut s = String::new();
        if !self.failures.is_empty() {
            s.push_str("<h2>Linearizability anomalies</h2>");
        }
        for kr in self.failures.iter().take(HTML_KEYS) {
            let _ = write!(s, "<h3>key {} — valid: {}</h3>", esc(&kr.key), kr.valid.as_str());
            let Some(a) = &kr.anomaly else {
                s.push_str("<p>The checker ran out of time on this key.</p>");
                continue;
            };
            let _ = write!(
                s,
                "<p>Failing op (its completion makes the history non-linearizable):</p>{}",
                op_rows(std::slice::from_ref(&a.failing_op))
            );
            let _ = write!(
                s,
                "<p>Smallest failing window: history #{}–#{}, initial value {} ({} ops). No order of these ops is legal:</p>{}",
                a.window_start_index,
                a.window_end_index,
                esc(&a.window_initial),
                a.window.len(),
                op_rows(&a.window)
            );
            let _ = write!(
                s,
                "<p>Longest partial linearization of the window (in order; {} ops in the longest one over the whole key):</p>{}",
                a.longest_full_len,
                op_rows(&a.longest_linearization)
            );
        }
        s
    }

    /// Without `failures`: they have their own section.
    fn table_json(&self) -> Value {
        let mut v = self.to_json();
        if let Value::Object(o) = &mut v {
            o.remove("failures");
        }
        v
    }
}

/// A table of ops (index, process, f, value, type, invoke and completion time).
fn op_rows(ops: &[OpSummary]) -> String {
    let mut s = String::from("<table><tr><th>#</th><th>process</th><th>f</th><th>value</th><th>type</th><th>invoke</th><th>complete</th></tr>");
    for o in ops {
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.3}s</td><td>{}</td></tr>",
            o.index,
            esc(&json_text(&o.process)),
            esc(&o.f),
            esc(&o.value.to_string()),
            esc(&o.typ),
            o.invoke_ns as f64 / 1e9,
            o.complete_ns
                .map(|t| format!("{:.3}s", t as f64 / 1e9))
                .unwrap_or_else(|| "never".into())
        );
    }
    s.push_str("</table>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::tests::hist;
    use crate::rng::Rng;
    use serde_json::json;
    use OpType::*;

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(30)
    }

    fn run(rows: &[(i64, OpType, &str, Value)]) -> LinearResult {
        check(&hist(rows), 2, Duration::from_secs(10))
    }

    fn w(p: i64, t: OpType, v: i64) -> (i64, OpType, &'static str, Value) {
        (p, t, "write", json!(["k", v]))
    }
    fn r(p: i64, t: OpType, v: Option<i64>) -> (i64, OpType, &'static str, Value) {
        (p, t, "read", json!(["k", v]))
    }

    /// Proves a plain sequential write-then-read history is linearizable.
    #[test]
    fn checker_linear_sequential_write_read_is_valid() {
        let res = run(&[w(0, Invoke, 1), w(0, Ok, 1), r(1, Invoke, None), r(1, Ok, Some(1))]);
        assert_eq!(res.valid, Verdict::Valid);
        assert_eq!(res.keys, 1);
    }

    /// Proves a stale read (value overwritten before the read began) is caught.
    #[test]
    fn checker_linear_stale_read_is_invalid() {
        let res = run(&[
            w(0, Invoke, 1),
            w(0, Ok, 1),
            w(0, Invoke, 2),
            w(0, Ok, 2),
            r(1, Invoke, None),
            r(1, Ok, Some(1)),
        ]);
        assert_eq!(res.valid, Verdict::Invalid);
        let a = res.failures[0].anomaly.as_ref().unwrap();
        assert_eq!(a.failing_op.f, "read");
        assert_eq!(a.failing_op.value, json!(1));
    }

    /// Proves reading a value nobody wrote is invalid, and reading nil before
    /// any write is valid.
    #[test]
    fn checker_linear_phantom_read_invalid_nil_initial_valid() {
        assert_eq!(run(&[r(1, Invoke, None), r(1, Ok, None)]).valid, Verdict::Valid);
        assert_eq!(run(&[r(1, Invoke, None), r(1, Ok, Some(9))]).valid, Verdict::Invalid);
    }

    /// Proves reads concurrent with a write may see either the old or the new
    /// value, in either order of invocation.
    #[test]
    fn checker_linear_concurrent_reads_see_old_or_new() {
        let res = run(&[
            w(0, Invoke, 1),
            r(1, Invoke, None),
            r(2, Invoke, None),
            r(1, Ok, Some(1)),
            r(2, Ok, None),
            w(0, Ok, 1),
        ]);
        // r1 saw 1, r2 (concurrent with r1) saw nil: order nil-read, write, 1-read.
        assert_eq!(res.valid, Verdict::Valid);
    }

    /// Proves that once a concurrent read has observed the new value, a later
    /// read (invoked after it returned) may not go back to the old one.
    #[test]
    fn checker_linear_no_going_back_after_observed_write() {
        let res = run(&[
            w(0, Invoke, 1),
            r(1, Invoke, None),
            r(1, Ok, Some(1)),
            r(2, Invoke, None),
            r(2, Ok, None),
            w(0, Ok, 1),
        ]);
        assert_eq!(res.valid, Verdict::Invalid);
    }

    /// Proves an info write may take effect (a later read sees it) or not
    /// (a later read sees nil), but not both in the order nil-after-value.
    #[test]
    fn checker_linear_info_write_may_or_may_not_happen() {
        let seen = run(&[w(0, Invoke, 1), w(0, Info, 1), r(1, Invoke, None), r(1, Ok, Some(1))]);
        assert_eq!(seen.valid, Verdict::Valid);
        let unseen = run(&[w(0, Invoke, 1), w(0, Info, 1), r(1, Invoke, None), r(1, Ok, None)]);
        assert_eq!(unseen.valid, Verdict::Valid);
        let flip = run(&[
            w(0, Invoke, 1),
            w(0, Info, 1),
            r(1, Invoke, None),
            r(1, Ok, Some(1)),
            r(1, Invoke, None),
            r(1, Ok, None),
        ]);
        assert_eq!(flip.valid, Verdict::Invalid);
    }

    /// Proves an info write can take effect long after its invoke (here after
    /// another ok write), which Knossos allows.
    #[test]
    fn checker_linear_info_write_may_land_late() {
        let res = run(&[
            w(0, Invoke, 1),
            w(0, Info, 1),
            w(5, Invoke, 2),
            w(5, Ok, 2),
            r(1, Invoke, None),
            r(1, Ok, Some(2)),
            r(1, Invoke, None),
            r(1, Ok, Some(1)),
        ]);
        assert_eq!(res.valid, Verdict::Valid);
    }

    /// Proves an info write cannot take effect before it was invoked.
    #[test]
    fn checker_linear_info_write_not_before_invoke() {
        let res = run(&[r(1, Invoke, None), r(1, Ok, Some(1)), w(0, Invoke, 1), w(0, Info, 1)]);
        assert_eq!(res.valid, Verdict::Invalid);
    }

    /// Proves a failed write never happened: reading its value is invalid.
    #[test]
    fn checker_linear_failed_write_never_happened() {
        let res = run(&[w(0, Invoke, 1), w(0, Fail, 1), r(1, Invoke, None), r(1, Ok, Some(1))]);
        assert_eq!(res.valid, Verdict::Invalid);
    }

    /// Proves an unfinished invoke at the end of the history counts as info.
    #[test]
    fn checker_linear_unfinished_write_is_info() {
        let res = run(&[w(0, Invoke, 1), r(1, Invoke, None), r(1, Ok, Some(1))]);
        assert_eq!(res.valid, Verdict::Valid);
    }

    /// Proves keys are independent: a bad key is reported, good keys are not.
    #[test]
    fn checker_linear_partitions_by_key() {
        let mut rows = Vec::new();
        for k in 0..20 {
            let key = format!("u{k}");
            rows.push((k, Invoke, "write", json!([key, 1])));
            rows.push((k, Ok, "write", json!([key, 1])));
            let seen = if k == 13 { json!([key, 2]) } else { json!([key, 1]) };
            rows.push((k, Invoke, "read", json!([key, null])));
            rows.push((k, Ok, "read", seen));
        }
        let res = check(&hist(&rows), 4, Duration::from_secs(10));
        assert_eq!(res.keys, 20);
        assert_eq!(res.invalid_keys, 1);
        assert_eq!(res.failures[0].key, "u13");
        assert_eq!(res.valid, Verdict::Invalid);
    }

    /// Proves the time limit yields `unknown` instead of hanging.
    #[test]
    fn checker_linear_time_limit_reports_unknown() {
        // Many concurrent info writes then an impossible read: exponential.
        let mut rows = Vec::new();
        for p in 0..40 {
            rows.push(w(p, Invoke, p + 1));
        }
        for p in 0..40 {
            rows.push(w(p, Info, p + 1));
        }
        rows.push(r(100, Invoke, None));
        rows.push(r(100, Ok, Some(999)));
        let res = check(&hist(&rows), 1, Duration::from_millis(50));
        assert_eq!(res.valid, Verdict::Unknown);
        assert_eq!(res.unknown_keys, 1);
    }

    /// Proves the shrinker finds a small window at the end of a long valid
    /// prefix, that the window alone fails, and that a partial linearization
    /// is reported.
    #[test]
    fn checker_linear_reports_small_window_and_partial_linearization() {
        let mut rows = Vec::new();
        for i in 1..=50 {
            rows.push(w(0, Invoke, i));
            rows.push(w(0, Ok, i));
            rows.push(r(1, Invoke, None));
            rows.push(r(1, Ok, Some(i)));
        }
        rows.push(w(0, Invoke, 51));
        rows.push(w(0, Ok, 51));
        rows.push(r(1, Invoke, None));
        rows.push(r(1, Ok, Some(50))); // stale
        let res = run(&rows);
        assert_eq!(res.valid, Verdict::Invalid);
        let a = res.failures[0].anomaly.as_ref().unwrap();
        assert!(a.window.len() <= 4, "window {:?}", a.window);
        assert_eq!(a.window_initial, "unknown");
        assert!(a.longest_full_len >= 100);
        assert!(!a.longest_linearization.is_empty());
        assert!(a.failing_op.f == "read" && a.failing_op.value == json!(50));
    }

    /// Brute force: some subset of optional ops plus all required ops, in some
    /// order respecting real time, is legal.
    fn brute(ops: &[Entry<RegOp>]) -> bool {
        fn go(ops: &[Entry<RegOp>], used: &mut Vec<bool>, state: u32) -> bool {
            let remaining_required =
                ops.iter().enumerate().any(|(i, o)| !used[i] && o.ret.is_some());
            if !remaining_required {
                return true;
            }
            // earliest return among unused required ops
            let min_ret = ops
                .iter()
                .enumerate()
                .filter(|(i, o)| !used[*i] && o.ret.is_some())
                .map(|(_, o)| o.ret.unwrap())
                .min()
                .unwrap();
            for i in 0..ops.len() {
                if used[i] || ops[i].call > min_ret {
                    continue;
                }
                if let Some(s) = Register.step(&state, &ops[i].input) {
                    used[i] = true;
                    if go(ops, used, s) {
                        return true;
                    }
                    used[i] = false;
                }
            }
            false
        }
        go(ops, &mut vec![false; ops.len()], NIL)
    }

    /// Proves WGL agrees with an independent brute-force search on 3000 random
    /// small histories with ok, info and concurrent ops (both verdicts occur).
    #[test]
    fn checker_linear_agrees_with_brute_force() {
        let mut rng = Rng::new(1);
        let (mut valid, mut invalid) = (0, 0);
        for _ in 0..3000 {
            let n = 1 + rng.below(7) as usize;
            let mut ops = Vec::new();
            let mut t = 0u64;
            for _ in 0..n {
                t += rng.below(3);
                let call = t;
                let len = 1 + rng.below(6);
                let ret = if rng.chance(0.2) { None } else { Some(call + len) };
                let input = if rng.chance(0.5) {
                    RegOp::Write(1 + rng.below(3) as u32)
                } else {
                    RegOp::Read(rng.below(4) as u32)
                };
                if matches!(input, RegOp::Read(_)) && ret.is_none() {
                    continue;
                }
                // make times distinct like history indices
                ops.push(Entry {
                    input,
                    call: call * 16 + ops.len() as u64,
                    ret: ret.map(|r| r * 16 + 8),
                });
            }
            let got = wgl(&Register, NIL, &ops, far()) == Search::Linearizable;
            let want = brute(&ops);
            assert_eq!(got, want, "{ops:?}");
            if want {
                valid += 1
            } else {
                invalid += 1
            }
        }
        assert!(valid > 300 && invalid > 300, "valid {valid} invalid {invalid}");
    }
}
