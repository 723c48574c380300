//! Cluster time never goes backwards on one node (ARCHITECTURE, "Cluster
//! time and the numbered master"), as the harness measured it.
//!
//! Every status answer carries the harness' SNTP sample of the node's
//! cluster clock: at harness time `at_ms` the node's cluster time was
//! `at_ms + offset_ms`, ± rtt/2. For two successive samples of one node
//! with no restart of that node between them (a kill's restart, the heal's,
//! a member re-add's), the later cluster time must not be earlier than the
//! former by more than half the sum of the two round trips plus 1 ms. A
//! restart is excluded: the SUT does not promise monotonicity across one
//! (until its first sync a started node stamps its own wall clock).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::status::observations;
use super::{CheckerResult, Verdict};
use crate::history::{Op, Process};
use crate::report::json_table;
use crate::sntp::Sample;

/// Measurement slack on top of the round trips, ms.
pub const SLACK_MS: f64 = 1.0;
/// At most this many steps back are kept in results.json (the largest
/// step is exact)…
const MAX_VIOLATIONS: usize = 50;
/// …and this many shown in report.html.
const HTML_VIOLATIONS: usize = 20;

/// Two successive samples of one node whose cluster time went back.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StepBack {
    pub node: u64,
    /// History indices of the two status completions.
    pub from_index: u64,
    pub to_index: u64,
    /// The node's cluster time at the two samples (Unix ms).
    pub from_cluster_ms: f64,
    pub to_cluster_ms: f64,
    /// Harness time between the two samples, ms.
    pub harness_gap_ms: f64,
    pub back_ms: f64,
    /// The measurement bound it went past.
    pub bound_ms: f64,
}

/// results.json `clock-monotonic`. (`serde(default)`: results.json of
/// older runs may lack newer fields.)
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct MonotonicResult {
    pub valid: Verdict,
    /// Pairs of successive samples compared.
    pub pairs: usize,
    /// Largest step back seen beyond the measurement bound (ms).
    pub max_back_ms: f64,
    pub violations: Vec<StepBack>,
}

/// Times (ns) at which the nemesis (re)started each node, by node number.
pub fn restarts(hist: &[Op]) -> BTreeMap<u64, Vec<u64>> {
    fn scan(v: &Value, t: u64, out: &mut BTreeMap<u64, Vec<u64>>) {
        let num = |s: &str| s.strip_prefix('n').and_then(|x| x.parse::<u64>().ok());
        match v {
            Value::Object(m) => {
                match m.get("restarted") {
                    Some(Value::Array(a)) => {
                        for n in a.iter().filter_map(|x| x.as_str()).filter_map(num) {
                            out.entry(n).or_default().push(t);
                        }
                    }
                    Some(Value::Bool(true)) => {
                        if let Some(n) = m.get("re-added").and_then(|x| x.as_str()).and_then(num) {
                            out.entry(n).or_default().push(t);
                        }
                    }
                    _ => {}
                }
                m.values().for_each(|x| scan(x, t, out));
            }
            Value::Array(a) => a.iter().for_each(|x| scan(x, t, out)),
            _ => {}
        }
    }
    let mut out = BTreeMap::new();
    for o in hist.iter().filter(|o| o.process == Process::Nemesis) {
        scan(&o.value, o.time, &mut out);
    }
    out
}

pub fn check(hist: &[Op]) -> MonotonicResult {
    let restarts = restarts(hist);
    // node → (invoke time, completion index, sample) of its previous sample.
    let mut last: BTreeMap<u64, (u64, u64, Sample)> = BTreeMap::new();
    let mut pairs = 0;
    let mut max_back = 0f64;
    let mut violations = Vec::new();
    for o in observations(hist) {
        // (Histories recorded before samples carried `at_ms` cannot be judged.)
        let Some(s) = o.status.as_ref().and_then(|s| s.sntp).filter(|s| s.at_ms > 0.0) else {
            continue;
        };
        let idx = o.complete.map(|c| c.index).unwrap_or(o.invoke.index);
        let now = (o.invoke.time, idx, s);
        let Some((t1, i1, a)) = last.insert(o.node, now) else {
            continue;
        };
        let restarted =
            restarts.get(&o.node).is_some_and(|r| r.iter().any(|&t| t > t1 && t <= o.time()));
        if restarted {
            continue;
        }
        pairs += 1;
        let back = a.cluster_ms() - s.cluster_ms();
        let bound = (a.rtt_ms + s.rtt_ms) / 2.0 + SLACK_MS;
        if back > bound {
            max_back = max_back.max(back);
            if violations.len() < MAX_VIOLATIONS {
                violations.push(StepBack {
                    node: o.node,
                    from_index: i1,
                    to_index: idx,
                    from_cluster_ms: a.cluster_ms(),
                    to_cluster_ms: s.cluster_ms(),
                    harness_gap_ms: s.at_ms - a.at_ms,
                    back_ms: back,
                    bound_ms: bound,
                });
            }
        }
    }
    MonotonicResult {
        valid: if violations.is_empty() { Verdict::Valid } else { Verdict::Invalid },
        pairs,
        max_back_ms: max_back,
        violations,
    }
}

impl CheckerResult for MonotonicResult {
    fn name(&self) -> &'static str {
        "clock-monotonic"
    }

    fn verdict(&self) -> Verdict {
        self.valid
    }

    fn summary_line(&self) -> String {
        let Some(v) = self.violations.first() else {
            return format!(
                "{} successive SNTP samples: no node's cluster time went back",
                self.pairs
            );
        };
        format!(
            "{} steps back in {} sample pairs (max {:.1} ms); first: n{} ops #{}→#{} went back {:.1} ms",
            self.violations.len(),
            self.pairs,
            self.max_back_ms,
            v.node,
            v.from_index,
            v.to_index,
            v.back_ms
        )
    }

    fn html_section(&self) -> String {
        if self.violations.is_empty() {
            return String::new();
        }
        let shown = &self.violations[..self.violations.len().min(HTML_VIOLATIONS)];
        format!(
            "<h3>Cluster time went backwards</h3><p>Successive SNTP samples of one node (no restart between) whose cluster time went back by more than the measurement bound:</p>{}",
            json_table(shown)
        )
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::checker::status::tests::{status_hist, sv};
    use crate::history::OpType;
    use serde_json::json;

    /// A status answer of `node` at harness time `t` ms whose SNTP sample
    /// says its cluster clock read `cluster` ms then.
    pub fn at(t: u64, node: u64, cluster: f64) -> (u64, u64, Option<Value>) {
        let mut v = sv(node, 3, Some(1), "follower");
        let at_ms = 1.7e12 + t as f64;
        v["sntp"] =
            json!({"offset_ms": cluster - t as f64, "rtt_ms": 0.4, "stratum": 2, "at_ms": at_ms});
        (t, node, Some(v))
    }

    /// Proves a clock that runs, stands still (a frozen master) or runs at
    /// half speed (a slew), with measurement noise under the bound, is valid.
    #[test]
    fn checker_master_monotonic_frozen_or_slewing_is_valid() {
        let h = status_hist(&[
            at(0, 2, 1000.0),
            at(150, 2, 1150.0),
            at(300, 2, 1150.3), // frozen (0.3 ms noise)
            at(450, 2, 1149.9), // frozen, 0.4 ms "back": within rtt/2 + 1
            at(600, 2, 1225.0), // half speed
            at(750, 2, 1300.0),
        ]);
        let r = check(&h);
        assert_eq!(r.valid, Verdict::Valid, "{:?}", r.violations);
        assert_eq!(r.pairs, 5);
    }

    /// Proves a step back of 40 ms between two answers of one node is
    /// caught, with both op indices.
    #[test]
    fn checker_master_monotonic_step_back_is_invalid() {
        let h = status_hist(&[at(0, 3, 5000.0), at(150, 3, 4960.0), at(300, 1, 0.0)]);
        let r = check(&h);
        assert_eq!(r.valid, Verdict::Invalid);
        let v = &r.violations[0];
        assert_eq!(v.node, 3);
        assert!((v.back_ms - 40.0).abs() < 1e-6);
        assert_eq!((v.from_index, v.to_index), (1, 3));
    }

    /// Proves a restart of the node between two samples (here the nemesis
    /// restarting it after a kill) excuses a step back, and only for that
    /// node.
    #[test]
    fn checker_master_monotonic_restart_excused() {
        let mut h = status_hist(&[
            at(0, 2, 90_000.0),
            at(0, 3, 90_000.0),
            at(1000, 2, 1000.0),
            at(1000, 3, 1000.0),
        ]);
        h.push(Op {
            index: 0,
            time: 500_000_000,
            typ: OpType::Info,
            process: Process::Nemesis,
            f: "stop-kill".into(),
            value: json!([{"restarted": ["n2"], "errors": []}]),
            node: None,
            error: None,
        });
        h.sort_by_key(|o| o.time);
        for (i, o) in h.iter_mut().enumerate() {
            o.index = i as u64;
        }
        assert_eq!(restarts(&h)[&2], vec![500_000_000]);
        let r = check(&h);
        assert_eq!(r.valid, Verdict::Invalid);
        assert_eq!(r.violations.len(), 1);
        assert_eq!(r.violations[0].node, 3);
    }
}
