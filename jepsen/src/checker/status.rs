//! Status observations of the master workload, as the master checkers read
//! them back from a history: every `status` op pair (invoke value
//! `{"node": N}`), with the node's own view parsed from an `ok` completion.
//!
//! Value of an `ok` status op (built by `workload::master::status_value`):
//! `{"node", "term", "leader", "state", "voters", "learners",
//!   "clock": {"offset_ms", "rtt_ms", "in_tolerance", "time_master", "error", "corrections"},
//!   "sntp": {"offset_ms", "rtt_ms", "stratum"} | {"error"} | null}`.

use serde_json::Value;

use crate::history::{pair_ops, Op, OpType};
use crate::sntp::Sample;

/// One node's view of itself and the cluster at one moment.
#[derive(Clone, Debug, PartialEq)]
pub struct Status {
    pub node: u64,
    pub term: u64,
    pub leader: Option<u64>,
    /// leader | follower | candidate | learner | shutdown
    pub state: String,
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    /// The node's own clock error against its time master (positive: the
    /// master is ahead), as the node reports it.
    pub offset_ms: Option<f64>,
    pub sut_rtt_ms: f64,
    pub in_tolerance: Option<bool>,
    pub time_master: Option<u64>,
    pub clock_error: Option<String>,
    /// The harness' own measurement of the node's cluster clock.
    pub sntp: Option<Sample>,
}

impl Status {
    pub fn from_value(v: &Value) -> Option<Status> {
        let nums = |k: &str| -> Vec<u64> {
            v[k].as_array().into_iter().flatten().filter_map(|x| x.as_u64()).collect()
        };
        let c = &v["clock"];
        Some(Status {
            node: v["node"].as_u64()?,
            term: v["term"].as_u64()?,
            leader: v["leader"].as_u64(),
            state: v["state"].as_str()?.to_string(),
            voters: nums("voters"),
            learners: nums("learners"),
            offset_ms: c["offset_ms"].as_f64(),
            sut_rtt_ms: c["rtt_ms"].as_f64().unwrap_or(0.0),
            in_tolerance: c["in_tolerance"].as_bool(),
            time_master: c["time_master"].as_u64(),
            clock_error: c["error"].as_str().map(str::to_string),
            sntp: serde_json::from_value(v["sntp"].clone()).ok(),
        })
    }

    pub fn is_leader(&self) -> bool {
        self.state == "leader"
    }
}

/// A status op: which node was asked, when, and what it said (None: the
/// request failed or never completed).
#[derive(Clone, Debug)]
pub struct Obs<'a> {
    pub node: u64,
    pub invoke: &'a Op,
    pub complete: Option<&'a Op>,
    pub status: Option<Status>,
}

impl Obs<'_> {
    /// Completion time (the invoke time if it never completed).
    pub fn time(&self) -> u64 {
        self.complete.map(|c| c.time).unwrap_or(self.invoke.time)
    }
}

/// Every `status` op of the history, in completion order.
pub fn observations(hist: &[Op]) -> Vec<Obs<'_>> {
    let mut out: Vec<Obs> = pair_ops(hist)
        .into_iter()
        .filter(|p| p.invoke.f == "status")
        .filter_map(|p| {
            let node = p.invoke.value["node"].as_u64()?;
            let status = p
                .complete
                .filter(|c| c.typ == OpType::Ok)
                .and_then(|c| Status::from_value(&c.value));
            Some(Obs { node, invoke: p.invoke, complete: p.complete, status })
        })
        .collect();
    out.sort_by_key(|o| (o.time(), o.invoke.index));
    out
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::history::Process;
    use serde_json::json;

    /// A status reply value as the workload records it.
    pub fn sv(node: u64, term: u64, leader: Option<u64>, state: &str) -> Value {
        json!({"node": node, "term": term, "leader": leader, "state": state,
               "voters": [1, 2, 3], "learners": [],
               "clock": {"offset_ms": 0.1, "rtt_ms": 0.2, "in_tolerance": true,
                         "time_master": leader, "corrections": 0},
               "sntp": null})
    }

    /// Builds a history of status ops: (time ms, node, completion value or
    /// None for a failed request). Invoke and completion 1 ms apart;
    /// process = node.
    pub fn status_hist(rows: &[(u64, u64, Option<Value>)]) -> Vec<Op> {
        let mut h = Vec::new();
        for (t, node, v) in rows {
            let p = Process::Worker(100 + node);
            let op = |typ, time, value: Value| Op {
                index: 0,
                time,
                typ,
                process: p,
                f: "status".into(),
                value,
                node: Some(format!("n{node}")),
                error: None,
            };
            h.push(op(OpType::Invoke, t * 1_000_000, json!({"node": node})));
            match v {
                Some(v) => h.push(op(OpType::Ok, t * 1_000_000 + 1_000_000, v.clone())),
                None => h.push(op(OpType::Fail, t * 1_000_000 + 1_000_000, json!({"node": node}))),
            }
        }
        h.sort_by_key(|o| o.time);
        for (i, o) in h.iter_mut().enumerate() {
            o.index = i as u64;
        }
        h
    }

    /// Proves a recorded status value parses back (node, term, leader,
    /// state, membership, clock) and failed requests carry no status.
    #[test]
    fn checker_master_status_parses_recorded_values() {
        let h = status_hist(&[(0, 2, Some(sv(2, 7, Some(1), "follower"))), (5, 3, None)]);
        let o = observations(&h);
        assert_eq!(o.len(), 2);
        let s = o[0].status.as_ref().unwrap();
        assert_eq!((s.node, s.term, s.leader, s.state.as_str()), (2, 7, Some(1), "follower"));
        assert_eq!(s.voters, vec![1, 2, 3]);
        assert_eq!((s.in_tolerance, s.time_master), (Some(true), Some(1)));
        assert!(o[1].status.is_none());
        assert_eq!(o[1].node, 3);
    }
}
