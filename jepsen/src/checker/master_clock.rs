//! After the final heal, every running member's cluster clock converges to
//! the master's within tolerance.
//!
//! At each point of the final phase (see `master_final`) the master must be
//! settled (L), and every running member must report `in_tolerance: true`,
//! no clock error, and L as its time master. The harness does not rely on
//! the self-report alone: it also measured each node's cluster clock over
//! SNTP against its own (unfaked) clock, and requires the measured skew
//! against L to stay within `tolerance + (rtt_node + rtt_L)/2 + the node's
//! own rtt/2 + slack`.
//!
//! The deadline scales with the clock faults of the run: cluster time never
//! goes backwards and backward corrections slew at half speed (SUT design),
//! so a clock B ms ahead needs ~2·B to converge. A node whose wall clock was
//! bumped while it was the lowest-numbered master legitimately moved cluster
//! time; what is checked is that the others converge to the master.
//!
//! Whether the self-report itself can be trusted during the run is judged
//! separately (`master_report`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::master_final::{final_stretch, judge_stretch, master_state, walk, FinalParams};
use super::status::Status;
use super::{CheckerResult, Verdict};
use crate::history::{Op, OpType, Process};
use crate::report::{esc, json_table, ms};

/// The measured skew of `s` against the master `l` (ms, positive: `s`
/// ahead) and the bound it must stay within; None without both samples.
pub fn measured_skew(s: &Status, l: &Status, p: &FinalParams) -> Option<(f64, f64)> {
    let (a, b) = (s.sntp?, l.sntp?);
    let skew = a.offset_ms - b.offset_ms;
    let bound = p.tolerance_ms + (a.rtt_ms + b.rtt_ms) / 2.0 + s.sut_rtt_ms / 2.0 + p.sntp_slack_ms;
    Some((skew, bound))
}

/// One node's clock judged against the master `l`.
pub fn node_clock(s: &Status, l: &Status, p: &FinalParams) -> Result<(), String> {
    if s.time_master != Some(l.node) {
        return Err(format!(
            "n{} follows time master {}",
            s.node,
            s.time_master.map(|m| format!("n{m}")).unwrap_or("none".into())
        ));
    }
    if let Some(e) = &s.clock_error {
        return Err(format!("n{}: {e}", s.node));
    }
    if s.in_tolerance != Some(true) {
        return Err(format!(
            "n{} not in tolerance (offset {} ms)",
            s.node,
            s.offset_ms.map(|o| format!("{o:.1}")).unwrap_or("?".into())
        ));
    }
    if s.node != l.node {
        if let Some((skew, bound)) = measured_skew(s, l, p) {
            if skew.abs() > bound {
                return Err(format!(
                    "n{} says in tolerance but its cluster clock is {skew:+.1} ms off n{} (measured; bound {bound:.1} ms)",
                    s.node, l.node
                ));
            }
        }
    }
    Ok(())
}

type Judged = (Result<(), String>, BTreeMap<u64, Result<(), String>>);

fn judge(latest: &BTreeMap<u64, Option<Status>>, p: &FinalParams) -> Judged {
    let settled = match master_state(latest, &p.running) {
        Ok(s) => s,
        Err(e) => return (Err(format!("master not settled: {e}")), BTreeMap::new()),
    };
    let l = latest[&settled.leader].as_ref().expect("leader answered");
    let mut per = BTreeMap::new();
    let mut first = Ok(());
    for n in &settled.judged {
        let s = latest[n].as_ref().expect("judged nodes answered");
        let r = node_clock(s, l, p);
        if first.is_ok() {
            if let Err(e) = &r {
                first = Err(e.clone());
            }
        }
        per.insert(*n, r);
    }
    (first, per)
}

/// One node's clock at the end of the final phase.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FinalClock {
    pub node: u64,
    pub in_tolerance: Option<bool>,
    /// Self-reported offset against its time master, ms.
    pub offset_ms: Option<f64>,
    pub time_master: Option<u64>,
    /// The harness' measured skew against the settled master and its bound
    /// (None without a settled master or without both samples), ms.
    pub measured_skew_ms: Option<f64>,
    pub bound_ms: Option<f64>,
}

/// results.json `clock-final` (and run.json `master_final.clock`).
/// (`serde(default)`: results.json of older runs may lack newer fields.)
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ClockFinal {
    pub valid: Verdict,
    pub settled_after_ms: Option<f64>,
    pub deadline_after_ms: f64,
    pub stable_ms: f64,
    pub last_unsettled: Option<String>,
    /// Per node: ms from healing until its clock was (and stayed) in tolerance.
    pub converged_after_ms: BTreeMap<String, Option<f64>>,
    /// Per node at the end: self-reported offset and the harness' measured
    /// skew against the master (ms).
    pub final_clocks: Vec<FinalClock>,
    pub largest_clock_fault_ms: i64,
    pub reason: String,
}

/// The largest clock offset the nemesis applied in the run (bump offsets,
/// strobe deltas), in ms.
pub fn clock_fault_max_ms(hist: &[Op]) -> i64 {
    fn scan(v: &Value, max: &mut i64) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    match k.as_str() {
                        "offsets_ms" => {
                            for o in x.as_array().into_iter().flatten() {
                                *max = (*max).max(o.as_i64().unwrap_or(0).abs());
                            }
                        }
                        "delta_ms" => *max = (*max).max(x.as_i64().unwrap_or(0).abs()),
                        _ => scan(x, max),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|x| scan(x, max)),
            _ => {}
        }
    }
    let mut max = 0;
    for o in hist.iter().filter(|o| {
        o.process == Process::Nemesis && o.typ == OpType::Info && o.f.starts_with("start-")
    }) {
        scan(&o.value, &mut max);
    }
    max
}

pub fn check(hist: &[Op], p: &FinalParams) -> ClockFinal {
    let (points, latest) = walk(hist, p, |l| judge(l, p));
    let end = points.last().map(|(t, _)| *t).unwrap_or(p.from_ns);
    let overall: Vec<(u64, Result<(), String>)> =
        points.iter().map(|(t, (r, _))| (*t, r.clone())).collect();
    let (start, last_err) = final_stretch(&overall);
    let (valid, reason) = judge_stretch(start, end, p.clock_deadline_ns, p.stable_ns);
    let ms = |ns: u64| ns as f64 / 1e6;
    let mut converged = BTreeMap::new();
    for n in &p.running {
        let per: Vec<(u64, Result<(), String>)> = points
            .iter()
            .map(|(t, (_, m))| (*t, m.get(n).cloned().unwrap_or(Err("not judged".into()))))
            .collect();
        let (s, _) = final_stretch(&per);
        converged.insert(format!("n{n}"), s.map(|s| ms(s.saturating_sub(p.from_ns))));
    }
    let master = master_state(&latest, &p.running).ok();
    let final_clocks = latest
        .iter()
        .filter_map(|(&node, s)| {
            let s = s.as_ref()?;
            let l = master.as_ref().and_then(|m| latest[&m.leader].as_ref());
            let skew = l.and_then(|l| measured_skew(s, l, p));
            Some(FinalClock {
                node,
                in_tolerance: s.in_tolerance,
                offset_ms: s.offset_ms,
                time_master: s.time_master,
                measured_skew_ms: skew.map(|x| x.0),
                bound_ms: skew.map(|x| x.1),
            })
        })
        .collect();
    ClockFinal {
        valid,
        settled_after_ms: start.map(|s| ms(s.saturating_sub(p.from_ns))),
        deadline_after_ms: ms(p.clock_deadline_ns - p.from_ns),
        stable_ms: start.map(|s| ms(end - s)).unwrap_or(0.0),
        last_unsettled: last_err,
        converged_after_ms: converged,
        final_clocks,
        largest_clock_fault_ms: clock_fault_max_ms(hist),
        reason,
    }
}

impl CheckerResult for ClockFinal {
    fn name(&self) -> &'static str {
        "clock-final"
    }

    fn verdict(&self) -> Verdict {
        self.valid
    }

    fn summary_line(&self) -> String {
        if self.valid == Verdict::Valid {
            format!(
                "every clock within tolerance of the master {} after heal (deadline {}; largest clock fault {} ms)",
                ms(self.settled_after_ms),
                ms(Some(self.deadline_after_ms)),
                self.largest_clock_fault_ms
            )
        } else {
            format!(
                "{}; last: {} (deadline {} after heal)",
                self.reason,
                self.last_unsettled.as_deref().unwrap_or("-"),
                ms(Some(self.deadline_after_ms))
            )
        }
    }

    fn html_section(&self) -> String {
        /// A row of the convergence table.
        #[derive(Serialize)]
        struct Converged<'a> {
            node: &'a str,
            #[serde(rename = "in tolerance since (ms after heal)")]
            since_ms: Option<f64>,
        }
        let conv: Vec<Converged> = self
            .converged_after_ms
            .iter()
            .map(|(node, since_ms)| Converged { node, since_ms: *since_ms })
            .collect();
        format!(
            "<h3>After healing: clocks</h3><p>valid: {} — {}</p>{}{}",
            self.valid.as_str(),
            esc(&self.reason),
            json_table(&conv),
            json_table(&self.final_clocks)
        )
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::checker::master_final::tests::params;
    use crate::checker::status::tests::{status_hist, sv};
    use crate::history::tests::hist;
    use serde_json::json;

    /// A status value with a clock: reported offset/in_tolerance and the
    /// harness' SNTP offset (node − harness, ms).
    pub fn cv(node: u64, leader: u64, off: f64, in_tol: bool, sntp_off: f64) -> Value {
        let mut v = sv(node, 8, Some(leader), if node == leader { "leader" } else { "follower" });
        v["clock"]["offset_ms"] = json!(off);
        v["clock"]["in_tolerance"] = json!(in_tol);
        v["sntp"] = json!({"offset_ms": sntp_off, "rtt_ms": 0.5, "stratum": if node == leader {1} else {2}});
        v
    }

    /// Rounds every 200 ms in [from, to); `f(node, t)` gives (reported
    /// offset, in_tolerance, measured sntp offset).
    fn rounds(
        from: u64,
        to: u64,
        f: impl Fn(u64, u64) -> (f64, bool, f64),
    ) -> Vec<(u64, u64, Option<Value>)> {
        let mut rows = Vec::new();
        for t in (from..to).step_by(200) {
            for n in 1..=3u64 {
                let (o, ok, m) = f(n, t);
                rows.push((t + n, n, Some(cv(n, 1, o, ok, m))));
            }
        }
        rows
    }

    /// Proves followers that slew back into tolerance before the deadline
    /// (n3 reported off until 4 s, measured off until then too) are valid,
    /// with per-node convergence times.
    #[test]
    fn checker_master_clock_converges_is_valid() {
        let rows = rounds(1000, 6000, |n, t| {
            if n == 3 && t < 4000 {
                (-900.0, false, 50_900.0)
            } else {
                (0.5, true, 50_000.2)
            }
        });
        let r = check(&status_hist(&rows), &params(&[1, 2, 3]));
        assert_eq!(r.valid, Verdict::Valid, "{r:?}");
        let n3 = r.converged_after_ms["n3"].unwrap();
        assert!((3000.0..3100.0).contains(&n3), "{n3}");
        assert!(r.converged_after_ms["n2"].unwrap() < 100.0);
    }

    /// Proves a follower still out of tolerance at the deadline is invalid.
    #[test]
    fn checker_master_clock_stays_out_of_tolerance_is_invalid() {
        let rows = rounds(1000, 10_000, |n, _| {
            if n == 2 {
                (-40.0, false, 50_040.0)
            } else {
                (0.1, true, 50_000.0)
            }
        });
        let r = check(&status_hist(&rows), &params(&[1, 2, 3]));
        assert_eq!(r.valid, Verdict::Invalid, "{r:?}");
        assert!(r.last_unsettled.unwrap().contains("n2 not in tolerance"));
        assert_eq!(r.converged_after_ms["n2"], None);
    }

    /// Proves the self-report is not trusted: a node that says it is in
    /// tolerance while the harness measures its cluster clock 30 s ahead of
    /// the master never converges (invalid).
    #[test]
    fn checker_master_clock_measured_skew_overrides_self_report() {
        let rows = rounds(1000, 10_000, |n, _| {
            if n == 2 {
                (0.2, true, 80_000.0)
            } else {
                (0.1, true, 50_000.0)
            }
        });
        let h = status_hist(&rows);
        let r = check(&h, &params(&[1, 2, 3]));
        assert_eq!(r.valid, Verdict::Invalid, "{r:?}");
        assert!(r.last_unsettled.unwrap().contains("+30000.0 ms off n1"));
    }

    /// Proves a node following another time master, or reporting a clock
    /// error, is not converged.
    #[test]
    fn checker_master_clock_wrong_time_master_or_error() {
        let mut rows = rounds(1000, 9000, |_, _| (0.1, true, 0.0));
        for r in rows.iter_mut().filter(|r| r.1 == 3) {
            r.2.as_mut().unwrap()["clock"]["time_master"] = json!(2);
        }
        let r = check(&status_hist(&rows), &params(&[1, 2, 3]));
        assert_eq!(r.valid, Verdict::Invalid);
        assert!(r.last_unsettled.unwrap().contains("n3 follows time master n2"));
        let mut rows = rounds(1000, 9000, |_, _| (0.1, true, 0.0));
        for r in rows.iter_mut().filter(|r| r.1 == 2) {
            r.2.as_mut().unwrap()["clock"]["error"] = json!("sntp: timed out");
        }
        assert_eq!(check(&status_hist(&rows), &params(&[1, 2, 3])).valid, Verdict::Invalid);
    }

    /// Proves the largest clock fault is found in bump offsets, strobe
    /// deltas and composites, and nothing else counts.
    #[test]
    fn checker_master_clock_fault_magnitude() {
        use crate::history::OpType::*;
        let h = hist(&[
            (
                -1,
                Info,
                "start-clock-bump",
                json!({"kind": "clock-bump", "nodes": [0, 2], "offsets_ms": [-68445, 1200]}),
            ),
            (-1, Info, "start-clock-bump", json!({"offsets": {"n1": "-68.445"}})),
            (
                -1,
                Info,
                "start-clock-strobe",
                json!({"kind": "clock-strobe", "delta_ms": 4000, "period_ms": 90000}),
            ),
            (-1, Info, "start-kill", json!({"kind": "kill", "order": [99999]})),
        ]);
        assert_eq!(clock_fault_max_ms(&h), 68_445);
        assert_eq!(clock_fault_max_ms(&h[2..]), 4000);
        assert_eq!(clock_fault_max_ms(&h[3..]), 0);
    }
}
