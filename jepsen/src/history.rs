//! The operation history, recorded the way Jepsen records it: every client
//! operation is an `invoke` followed by exactly one completion from the same
//! process: `ok` (it happened), `fail` (it definitely did not happen) or `info`
//! (unknown). Nemesis actions are `info` ops from process `nemesis`.
//! Time is nanoseconds of the harness' own monotonic clock since test start.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{Context, Result};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpType {
    Invoke,
    Ok,
    Fail,
    Info,
}

impl OpType {
    pub fn as_str(&self) -> &'static str {
        match self {
            OpType::Invoke => "invoke",
            OpType::Ok => "ok",
            OpType::Fail => "fail",
            OpType::Info => "info",
        }
    }
}

/// A logical process: a client worker (numbered; a worker whose op ended in
/// `info` continues as a fresh process) or the nemesis.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Process {
    Worker(u64),
    Nemesis,
}

impl Serialize for Process {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Process::Worker(n) => s.serialize_u64(*n),
            Process::Nemesis => s.serialize_str("nemesis"),
        }
    }
}

impl<'de> Deserialize<'de> for Process {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Number(n) => n
                .as_u64()
                .map(Process::Worker)
                .ok_or_else(|| serde::de::Error::custom("process must be a non-negative integer")),
            Value::String(s) if s == "nemesis" => Ok(Process::Nemesis),
            other => Err(serde::de::Error::custom(format!("bad process {other}"))),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Op {
    pub index: u64,
    /// Nanoseconds since the start of the test (harness monotonic clock).
    pub time: u64,
    #[serde(rename = "type")]
    pub typ: OpType,
    pub process: Process,
    pub f: String,
    #[serde(default)]
    pub value: Value,
    #[serde(default)]
    pub node: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
}

impl Op {
    pub fn is_client(&self) -> bool {
        matches!(self.process, Process::Worker(_))
    }
}

/// Thread-safe recorder. Index and time are assigned under one lock so the
/// index order is the real-time order.
pub struct Recorder {
    start: Instant,
    ops: Mutex<Vec<Op>>,
}

impl Recorder {
    pub fn new(start: Instant) -> Self {
        Recorder { start, ops: Mutex::new(Vec::new()) }
    }

    pub fn start(&self) -> Instant {
        self.start
    }

    /// Nanoseconds since test start.
    pub fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    pub fn record(
        &self,
        typ: OpType,
        process: Process,
        f: &str,
        value: Value,
        node: Option<&str>,
        error: Option<String>,
    ) -> Op {
        let mut ops = self.ops.lock().unwrap_or_else(|e| e.into_inner());
        let op = Op {
            index: ops.len() as u64,
            time: self.now(),
            typ,
            process,
            f: f.to_string(),
            value,
            node: node.map(str::to_string),
            error,
        };
        ops.push(op.clone());
        op
    }

    pub fn snapshot(&self) -> Vec<Op> {
        self.ops.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Number of ops recorded so far (the index the next op gets).
    pub fn len(&self) -> usize {
        self.ops.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy of the ops from index `from` on.
    pub fn since(&self, from: usize) -> Vec<Op> {
        let ops = self.ops.lock().unwrap_or_else(|e| e.into_inner());
        ops.get(from..).map(<[Op]>::to_vec).unwrap_or_default()
    }
}

/// An invocation with its completion (if any).
#[derive(Clone, Debug)]
pub struct Pair<'a> {
    pub invoke: &'a Op,
    pub complete: Option<&'a Op>,
}

/// Pairs each client invoke with the next op of the same process. Invokes
/// without a completion (history cut short) come back with `complete: None`
/// and must be treated as `info`. Nemesis ops are not paired.
pub fn pair_ops(history: &[Op]) -> Vec<Pair<'_>> {
    use std::collections::HashMap;
    let mut open: HashMap<Process, usize> = HashMap::new();
    let mut pairs: Vec<Pair> = Vec::new();
    for op in history {
        if !op.is_client() {
            continue;
        }
        match op.typ {
            OpType::Invoke => {
                open.insert(op.process, pairs.len());
                pairs.push(Pair { invoke: op, complete: None });
            }
            _ => {
                if let Some(i) = open.remove(&op.process) {
                    pairs[i].complete = Some(op);
                }
            }
        }
    }
    pairs
}

/// Checks the structural rules: indices dense, time non-decreasing, each
/// client process alternates invoke/completion, no op after an `info` on the
/// same process. Returns a list of problems (empty when well-formed).
pub fn validate(history: &[Op]) -> Vec<String> {
    use std::collections::{HashMap, HashSet};
    let mut problems = Vec::new();
    let mut open: HashMap<Process, u64> = HashMap::new();
    let mut crashed: HashSet<Process> = HashSet::new();
    let mut last_time = 0;
    for (i, op) in history.iter().enumerate() {
        if op.index != i as u64 {
            problems.push(format!("op {i} has index {}", op.index));
        }
        if op.time < last_time {
            problems.push(format!("op {} goes back in time", op.index));
        }
        last_time = op.time;
        if !op.is_client() {
            continue;
        }
        if crashed.contains(&op.process) {
            problems.push(format!("op {} reuses process {:?} after info", op.index, op.process));
        }
        match op.typ {
            OpType::Invoke => {
                if let Some(prev) = open.insert(op.process, op.index) {
                    problems.push(format!("op {} invokes while op {prev} is open", op.index));
                }
            }
            t => {
                if open.remove(&op.process).is_none() {
                    problems.push(format!("op {} completes nothing", op.index));
                }
                if t == OpType::Info {
                    crashed.insert(op.process);
                }
            }
        }
    }
    problems
}

pub fn write_jsonl(path: &Path, history: &[Op]) -> Result<()> {
    let mut w =
        BufWriter::new(File::create(path).with_context(|| format!("create {}", path.display()))?);
    for op in history {
        serde_json::to_writer(&mut w, op)?;
        w.write_all(b"\n")?;
    }
    w.flush()?;
    Ok(())
}

pub fn read_jsonl(path: &Path) -> Result<Vec<Op>> {
    let r = BufReader::new(File::open(path).with_context(|| format!("open {}", path.display()))?);
    let mut ops = Vec::new();
    for (n, line) in r.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        ops.push(
            serde_json::from_str(&line).with_context(|| format!("{}:{}", path.display(), n + 1))?,
        );
    }
    Ok(ops)
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use serde_json::json;

    /// Builds a history from (process, type, f, value) rows with time = index.
    pub fn hist(rows: &[(i64, OpType, &str, Value)]) -> Vec<Op> {
        rows.iter()
            .enumerate()
            .map(|(i, (p, t, f, v))| Op {
                index: i as u64,
                time: i as u64 * 1000,
                typ: *t,
                process: if *p < 0 { Process::Nemesis } else { Process::Worker(*p as u64) },
                f: f.to_string(),
                value: v.clone(),
                node: None,
                error: None,
            })
            .collect()
    }

    /// Proves an op survives a JSONL round trip with the documented field names.
    #[test]
    fn history_jsonl_round_trip_keeps_fields() {
        let h = hist(&[
            (0, OpType::Invoke, "write", json!(["k1", 3])),
            (-1, OpType::Info, "start-partition", json!({"mode":"halves"})),
            (0, OpType::Ok, "write", json!(["k1", 3])),
        ]);
        let dir = std::env::temp_dir().join(format!("hj-hist-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("h.jsonl");
        write_jsonl(&p, &h).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        let first: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        for field in ["index", "time", "type", "process", "f", "value", "node", "error"] {
            assert!(first.get(field).is_some(), "missing {field}");
        }
        assert!(text.contains("\"process\":\"nemesis\""));
        assert_eq!(read_jsonl(&p).unwrap(), h);
        std::fs::remove_dir_all(&dir).ok();
    }

    /// Proves pairing matches each invoke to its own process' completion and
    /// leaves a dangling invoke open.
    #[test]
    fn history_pairs_invokes_with_completions() {
        let h = hist(&[
            (0, OpType::Invoke, "write", json!(["k", 1])),
            (1, OpType::Invoke, "read", json!(["k", null])),
            (1, OpType::Ok, "read", json!(["k", 1])),
            (0, OpType::Info, "write", json!(["k", 1])),
            (2, OpType::Invoke, "read", json!(["k", null])),
        ]);
        let p = pair_ops(&h);
        assert_eq!(p.len(), 3);
        assert_eq!(p[0].complete.unwrap().index, 3);
        assert_eq!(p[1].complete.unwrap().index, 2);
        assert!(p[2].complete.is_none());
        assert!(validate(&h).is_empty());
    }

    /// Proves the validator rejects a process reused after an info op and a
    /// double invoke.
    #[test]
    fn history_validate_rejects_malformed() {
        let h = hist(&[
            (0, OpType::Invoke, "write", json!(["k", 1])),
            (0, OpType::Info, "write", json!(["k", 1])),
            (0, OpType::Invoke, "read", json!(["k", null])),
            (0, OpType::Invoke, "read", json!(["k", null])),
        ]);
        let v = validate(&h);
        assert!(v.iter().any(|s| s.contains("after info")));
        assert!(v.iter().any(|s| s.contains("is open")));
    }
}
