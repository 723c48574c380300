//! The clock self-report can be trusted: a node does not keep saying
//! `in_tolerance: true` while its cluster clock is far off its time master.
//!
//! For every status answer of the run that says in tolerance (no clock
//! error, a time master other than itself), the harness compares the node's
//! SNTP-measured cluster clock with its time master's, sampled within
//! 300 ms. More than 1 s apart is a misreport. One misreport right after a
//! clock fault is expected (the node has not polled since; polls are every
//! `<time interval-ms>`); a *persistent* streak — consecutive misreports of
//! one node over at least 1 s — is invalid: status (and the node's SNTP
//! answers, stratum 2 "synced") claim a clock that the node does not have.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::status::{observations, Status};
use super::{CheckerResult, Verdict};
use crate::history::Op;
use crate::report::{json_table, json_text};
use crate::sntp::Sample;

/// Measured skew over which an "in tolerance" answer is a misreport, ms.
pub const OFF_MS: f64 = 1000.0;
/// A streak of misreports at least this long is invalid, ns.
pub const PERSISTENT_NS: u64 = 1_000_000_000;

/// The first misreport of a streak.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Misreport {
    pub time_ns: u64,
    pub node: u64,
    pub time_master: Option<u64>,
    /// The node's own `clock.offset_ms`.
    pub reported_offset_ms: Option<f64>,
    /// Its cluster clock minus its time master's, measured over SNTP.
    pub measured_skew_ms: f64,
}

/// A persistent streak: its first answer and how long it lasted.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Streak {
    pub first: Misreport,
    pub lasted_ms: f64,
}

/// results.json `clock-report`. (`serde(default)`: results.json of older
/// runs may lack newer fields.)
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ReportResult {
    pub valid: Verdict,
    /// Answers that were misreports (including transient ones).
    pub count: usize,
    pub max_measured_skew_ms: f64,
    pub persistent_streaks: usize,
    pub longest_streak_ms: f64,
    /// The first answer of each persistent streak (up to 20) and its length.
    pub streaks: Vec<Streak>,
}

/// At most this many persistent streaks are kept (the count is exact).
const MAX_STREAKS: usize = 20;

pub fn check(hist: &[Op]) -> ReportResult {
    let obs: Vec<(u64, Option<Status>)> =
        observations(hist).into_iter().map(|o| (o.time(), o.status)).collect();
    let mut by_node: BTreeMap<u64, Vec<(u64, Sample)>> = BTreeMap::new();
    for (t, s) in &obs {
        if let Some(s) = s {
            if let Some(x) = s.sntp {
                by_node.entry(s.node).or_default().push((*t, x));
            }
        }
    }
    let flagged = |t: u64, s: &Status| -> Option<f64> {
        let m = s.time_master.filter(|m| *m != s.node)?;
        if s.in_tolerance != Some(true) || s.clock_error.is_some() {
            return None;
        }
        let near = by_node.get(&m).and_then(|v| {
            v.iter()
                .filter(|(tm, _)| tm.abs_diff(t) <= 300_000_000)
                .min_by_key(|(tm, _)| tm.abs_diff(t))
        })?;
        let skew = s.sntp?.offset_ms - near.1.offset_ms;
        (skew.abs() > OFF_MS).then_some(skew)
    };
    let mut count = 0;
    let mut max_ms = 0f64;
    let mut persistent = 0;
    let mut longest_ms = 0f64;
    let mut streaks: Vec<Streak> = Vec::new();
    // Open streak per node: (first time, first misreport).
    let mut open: BTreeMap<u64, (u64, Misreport)> = BTreeMap::new();
    let mut close = |node: u64, end: u64, open: &mut BTreeMap<u64, (u64, Misreport)>| {
        if let Some((start, first)) = open.remove(&node) {
            let len = (end - start) as f64 / 1e6;
            longest_ms = longest_ms.max(len);
            if end - start >= PERSISTENT_NS {
                persistent += 1;
                if streaks.len() < MAX_STREAKS {
                    streaks.push(Streak { first, lasted_ms: len });
                }
            }
        }
    };
    let mut last_t: BTreeMap<u64, u64> = BTreeMap::new();
    for (t, s) in &obs {
        let Some(s) = s else { continue };
        match flagged(*t, s) {
            Some(skew) => {
                count += 1;
                max_ms = max_ms.max(skew.abs());
                open.entry(s.node).or_insert_with(|| {
                    (
                        *t,
                        Misreport {
                            time_ns: *t,
                            node: s.node,
                            time_master: s.time_master,
                            reported_offset_ms: s.offset_ms,
                            measured_skew_ms: skew,
                        },
                    )
                });
                last_t.insert(s.node, *t);
            }
            None => {
                let end = last_t.get(&s.node).copied().unwrap_or(*t);
                close(s.node, end, &mut open);
            }
        }
    }
    let rest: Vec<u64> = open.keys().copied().collect();
    for n in rest {
        let end = last_t.get(&n).copied().unwrap_or(0);
        close(n, end, &mut open);
    }
    ReportResult {
        valid: if persistent == 0 { Verdict::Valid } else { Verdict::Invalid },
        count,
        max_measured_skew_ms: max_ms,
        persistent_streaks: persistent,
        longest_streak_ms: longest_ms,
        streaks,
    }
}

impl CheckerResult for ReportResult {
    fn name(&self) -> &'static str {
        "clock-report"
    }

    fn verdict(&self) -> Verdict {
        self.valid
    }

    fn summary_line(&self) -> String {
        if self.persistent_streaks == 0 {
            return format!(
                "no node kept claiming to be in tolerance while measured >1 s off ({} transient stale answers)",
                self.count
            );
        }
        let f = self.streaks.first().cloned().unwrap_or_default();
        format!(
            "{} times a node kept saying in tolerance while measured >1 s off, for >=1 s (longest {:.0} ms, max skew {:.0} ms); first: n{} at {:.3} s, reported {} ms, measured {:+.0} ms",
            self.persistent_streaks,
            self.longest_streak_ms,
            self.max_measured_skew_ms,
            f.first.node,
            f.first.time_ns as f64 / 1e9,
            json_text(&f.first.reported_offset_ms),
            f.first.measured_skew_ms
        )
    }

    fn html_section(&self) -> String {
        if self.streaks.is_empty() {
            return String::new();
        }
        /// A table row: the first answer, and how long the streak lasted.
        #[derive(Serialize)]
        struct Row<'a> {
            #[serde(flatten)]
            first: &'a Misreport,
            lasted_ms: f64,
        }
        let rows: Vec<Row> =
            self.streaks.iter().map(|x| Row { first: &x.first, lasted_ms: x.lasted_ms }).collect();
        format!(
            "<h3>Clock self-report contradicted by measurement</h3><p>Streaks of answers in which a node said <code>in_tolerance: true</code> while the harness measured its cluster clock more than 1 s off its time master:</p>{}",
            json_table(&rows)
        )
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::checker::master_clock::tests::cv;
    use crate::checker::status::tests::status_hist;
    use serde_json::json;

    /// Answers every 200 ms from `from` to `to` ms; n2's measured offset is
    /// `n2(t)`, everyone else runs with the master; all say in tolerance.
    pub fn run(from: u64, to: u64, n2: impl Fn(u64) -> f64) -> Vec<Op> {
        let mut rows = Vec::new();
        for t in (from..to).step_by(200) {
            for n in 1..=3u64 {
                let m = if n == 2 { n2(t) } else { 50_000.0 };
                rows.push((t + n, n, Some(cv(n, 1, 0.1, true, m))));
            }
        }
        status_hist(&rows)
    }

    /// Proves honest answers are valid, and that a single stale answer right
    /// after a clock fault (n2 says in tolerance once while 40 s off, then
    /// reports the error) is counted but not invalid.
    #[test]
    fn checker_master_report_honest_or_transient_is_valid() {
        let r = check(&run(0, 5000, |_| 50_000.2));
        assert_eq!((r.valid, r.count), (Verdict::Valid, 0));
        let mut h = run(0, 5000, |t| if t == 2000 { 90_000.0 } else { 50_000.0 });
        let r = check(&h);
        assert_eq!((r.valid, r.count, r.persistent_streaks), (Verdict::Valid, 1, 0));
        // Once it reports itself out of tolerance, it is no misreport.
        for o in h.iter_mut().filter(|o| o.typ == crate::history::OpType::Ok) {
            if o.value["node"] == json!(2) && o.value["sntp"]["offset_ms"] == json!(90_000.0) {
                o.value["clock"]["in_tolerance"] = json!(false);
            }
        }
        assert_eq!(check(&h).count, 0);
    }

    /// Proves a node that keeps saying "in tolerance" while its cluster
    /// clock stands 88 s ahead of the master (the frozen-clock case seen in
    /// run 20261121T111156Z) is invalid, with the streak's first answer.
    #[test]
    fn checker_master_report_persistent_misreport_is_invalid() {
        let h = run(0, 6000, |t| {
            if (1000..4000).contains(&t) {
                50_000.0 + 88_000.0 - t as f64
            } else {
                50_000.0
            }
        });
        let r = check(&h);
        assert_eq!(r.valid, Verdict::Invalid);
        assert_eq!(r.persistent_streaks, 1);
        assert_eq!(r.streaks[0].first.node, 2);
        assert!(r.longest_streak_ms >= 2800.0, "{}", r.longest_streak_ms);
    }
}
