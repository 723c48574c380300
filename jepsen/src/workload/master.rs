//! The master/time workload. One poller thread per node asks that node for
//! its own view, `GET /v1/cluster?local=true`, every `period`, and measures
//! the node's cluster clock itself over SNTP (see `sntp`). Each poll is a
//! read-only `status` op: invoke `{"node": N}`; `ok` with the node's term,
//! leader, state, membership and clock (format in `checker::status`);
//! `fail` when the node did not answer (a read has no side effects).
//!
//! After the final heal, `final_phase` polls every running node again until
//! the master has settled on the lowest running voter and every clock is in
//! tolerance (judged by the checkers themselves, so the harness stops as
//! soon as the verdict is in), or until the deadlines have passed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Result;
use herald_proto::wire::cluster::{ClockStatus, ClusterView};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::checker::{master_clock, master_final, Verdict};
use crate::client::Api;
use crate::db::TIME_PORT;
use crate::history::{OpType, Process, Recorder};
use crate::netns;
use crate::sntp::{self, Sample};

/// Status pollers are processes STATUS_PROCESS_BASE + node index (one per
/// node, the same in the main and the final phase).
pub const STATUS_PROCESS_BASE: u64 = 500_000_000;

#[derive(Clone, Debug)]
pub struct Opts {
    /// (name, ip) of every node; node i has number i + 1.
    pub nodes: Vec<(String, String)>,
    /// Time between the starts of two polls of one node.
    pub period: Duration,
    /// HTTP timeout of one poll.
    pub timeout: Duration,
    /// SNTP samples per poll (0: no SNTP measurement).
    pub sntp_samples: usize,
}

/// The op value of a successful poll: the node's own view, reduced to what
/// the checkers need. Err if the reply does not look like a cluster view.
pub fn status_value(view: &Value, sntp: Option<Result<Sample, String>>) -> Result<Value, String> {
    let view = ClusterView::deserialize(view).map_err(|e| format!("not a cluster view: {e}"))?;
    let mut voters = Vec::new();
    let mut learners = Vec::new();
    let mut clock = None;
    for m in &view.nodes {
        match m.role.as_str() {
            "learner" => learners.push(m.number),
            "" => {}
            _ => voters.push(m.number),
        }
        if m.number == view.node {
            clock = m.clock.as_ref();
        }
    }
    voters.sort_unstable();
    learners.sort_unstable();
    // No clock reported: every clock field is null.
    let c = |f: fn(&ClockStatus) -> Value| clock.map_or(Value::Null, f);
    Ok(json!({
        "node": view.node,
        "term": view.term,
        "leader": view.leader,
        "state": view.state,
        "time_master": view.time_master,
        "voters": voters,
        "learners": learners,
        "clock": {
            "offset_ms": c(|k| json!(k.offset_ms)),
            "rtt_ms": c(|k| json!(k.rtt_ms)),
            "in_tolerance": c(|k| json!(k.in_tolerance)),
            "time_master": c(|k| json!(k.time_master)),
            "error": c(|k| json!(k.error)),
            "corrections": c(|k| json!(k.corrections)),
        },
        "sntp": match sntp {
            None => Value::Null,
            Some(Ok(s)) => json!(s),
            Some(Err(e)) => json!({"error": e}),
        },
    }))
}

/// One poll of node `i`, recorded as a status op pair.
fn poll(api: &Api, rec: &Recorder, i: usize, opts: &Opts) {
    let (name, ip) = &opts.nodes[i];
    let p = Process::Worker(STATUS_PROCESS_BASE + i as u64);
    let number = i as u64 + 1;
    rec.record(OpType::Invoke, p, "status", json!({"node": number}), Some(name), None);
    let res = api.get(ip, "/v1/cluster?local=true").map_err(|e| e.to_string()).and_then(|view| {
        let s = (opts.sntp_samples > 0)
            .then(|| sntp::probe(ip, TIME_PORT, opts.sntp_samples, Duration::from_millis(300)));
        status_value(&view, s)
    });
    match res {
        Ok(v) => rec.record(OpType::Ok, p, "status", v, Some(name), None),
        Err(e) => {
            rec.record(OpType::Fail, p, "status", json!({"node": number}), Some(name), Some(e))
        }
    };
}

/// Starts one poller per node in `which` (each enters the client namespace).
pub fn spawn(
    opts: &Opts,
    which: &[usize],
    rec: Arc<Recorder>,
    stop: Arc<AtomicBool>,
) -> Vec<JoinHandle<Result<()>>> {
    which
        .iter()
        .map(|&i| {
            let (opts, rec, stop) = (opts.clone(), rec.clone(), stop.clone());
            std::thread::Builder::new()
                .name(format!("status-{}", i + 1))
                .spawn(move || {
                    netns::enter(netns::CLIENT_NS)?;
                    let api = Api::new(opts.timeout);
                    // Spread the nodes' polls over the period.
                    let offset = opts.period.mul_f64(i as f64 / opts.nodes.len().max(1) as f64);
                    std::thread::sleep(offset);
                    while !stop.load(Ordering::SeqCst) {
                        let next = Instant::now() + opts.period;
                        poll(&api, &rec, i, &opts);
                        while Instant::now() < next && !stop.load(Ordering::SeqCst) {
                            std::thread::sleep(
                                (next - Instant::now()).min(Duration::from_millis(50)),
                            );
                        }
                    }
                    Ok(())
                })
                .expect("spawn status poller")
        })
        .collect()
}

/// What the final phase saw (stored in run.json next to its parameters).
/// Only `params` is required to read it back (the checkers re-run from
/// the history).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FinalSummary {
    pub params: master_final::FinalParams,
    #[serde(default)]
    pub polled_ms: f64,
    #[serde(default)]
    pub master: master_final::MasterFinal,
    #[serde(default)]
    pub clock: master_clock::ClockFinal,
    #[serde(default)]
    pub stopped_because: String,
}

/// Polls the running nodes after healing until both final checks are
/// valid, or until the later deadline plus the stable window has passed.
/// `from` is the history index of the first op after the heal.
pub fn final_phase(
    rec: &Arc<Recorder>,
    opts: &Opts,
    running: &[usize],
    params: master_final::FinalParams,
    from: usize,
    interrupted: impl Fn() -> bool,
) -> FinalSummary {
    let stop = Arc::new(AtomicBool::new(false));
    let handles = spawn(opts, running, rec.clone(), stop.clone());
    let start = rec.now();
    let give_up = params.master_deadline_ns.max(params.clock_deadline_ns) + params.stable_ns;
    let why = loop {
        std::thread::sleep(Duration::from_millis(250));
        if interrupted() {
            break "interrupted".to_string();
        }
        let ops = rec.since(from);
        let m = master_final::check(&ops, &params);
        let c = master_clock::check(&ops, &params);
        if m.valid == Verdict::Valid && c.valid == Verdict::Valid {
            break "master and clocks settled and stable".into();
        }
        if rec.now() > give_up {
            break format!(
                "deadline passed (master {}, clocks {})",
                m.valid.as_str(),
                c.valid.as_str()
            );
        }
    };
    stop.store(true, Ordering::SeqCst);
    for h in handles {
        let _ = h.join();
    }
    let ops = rec.since(from);
    FinalSummary {
        master: master_final::check(&ops, &params),
        clock: master_clock::check(&ops, &params),
        polled_ms: (rec.now() - start) as f64 / 1e6,
        params,
        stopped_because: why,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves a real `/v1/cluster?local=true` reply (shape of heraldd's
    /// ClusterView) becomes a status value with the node's own clock, voters
    /// and learners, and that a reply without term is rejected.
    #[test]
    fn workload_master_status_value_from_cluster_view() {
        let view = json!({"cluster": "jepsen", "node": 2, "state": "follower", "leader": 1, "master": 1,
            "time_master": 1, "term": 6, "last_log_index": 9, "commit_index": 9, "applied_index": 9,
            "nodes": [
              {"number": 1, "role": "leader", "healthy": false, "sync": "", "publish": ""},
              {"number": 2, "role": "follower", "healthy": true,
               "clock": {"offset_ms": -0.4, "rtt_ms": 0.3, "last_sync_ms": 1, "in_tolerance": true, "time_master": 1, "corrections": 2}},
              {"number": 4, "role": "learner", "healthy": false},
              {"number": 3, "role": "follower", "healthy": false}]});
        let s = Sample { offset_ms: 12.5, rtt_ms: 0.4, stratum: 2, at_ms: 1.0e12 };
        let v = status_value(&view, Some(Ok(s))).unwrap();
        assert_eq!(v["node"], json!(2));
        assert_eq!(v["term"], json!(6));
        assert_eq!(v["leader"], json!(1));
        assert_eq!(v["voters"], json!([1, 2, 3]));
        assert_eq!(v["learners"], json!([4]));
        assert_eq!(v["clock"]["offset_ms"], json!(-0.4));
        assert_eq!(v["clock"]["in_tolerance"], json!(true));
        assert_eq!(v["sntp"]["offset_ms"], json!(12.5));
        let st = crate::checker::status::Status::from_value(&v).unwrap();
        assert_eq!((st.node, st.term, st.leader, st.time_master), (2, 6, Some(1), Some(1)));
        assert_eq!(st.sntp, Some(s));
        let bad = json!({"node": 2, "state": "follower", "nodes": []});
        assert!(status_value(&bad, None).is_err());
        let e = status_value(&view, Some(Err("recv: timed out".into()))).unwrap();
        assert_eq!(e["sntp"]["error"], json!("recv: timed out"));
        assert_eq!(crate::checker::status::Status::from_value(&e).unwrap().sntp, None);
    }

    /// Proves a view in which the node reports no clock records every clock
    /// field as null (unknown, not zero), that a clock error is kept, and
    /// that a member without a role is neither voter nor learner.
    #[test]
    fn workload_master_status_value_without_clock() {
        let view = json!({"node": 3, "state": "candidate", "leader": null, "term": 2,
            "nodes": [{"number": 3}, {"number": 1, "role": "follower"}]});
        let v = status_value(&view, None).unwrap();
        assert_eq!(v["voters"], json!([1]));
        assert_eq!(v["learners"], json!([]));
        assert_eq!(v["leader"], Value::Null);
        for f in ["offset_ms", "rtt_ms", "in_tolerance", "time_master", "error", "corrections"] {
            assert_eq!(v["clock"][f], Value::Null, "{f}");
        }
        let view = json!({"node": 1, "state": "follower", "term": 2, "nodes": [{"number": 1,
            "role": "follower", "clock": {"offset_ms": 0.0, "rtt_ms": 0.0, "last_sync_ms": 0,
            "in_tolerance": false, "time_master": null, "error": "no time master", "corrections": 0}}]});
        let v = status_value(&view, None).unwrap();
        assert_eq!(v["clock"]["error"], json!("no time master"));
        assert_eq!(v["clock"]["in_tolerance"], json!(false));
        let st = crate::checker::status::Status::from_value(&v).unwrap();
        assert_eq!(st.clock_error.as_deref(), Some("no time master"));
    }
}
